"""Block codecs: the transforms between a block's record bytes and its stored bytes.

A codec is a small frozen object with ``compress(data)``, ``decompress(data, length)`` and
``decompress_into(data, out)`` (the ``Codec`` protocol).  ``CODECS`` is the one table of them:
the id stored in a block header's codec byte (``engine.format.CODEC_NONE``, ``CODEC_ZSTD``), the
name users and ``docs/FORMAT.md`` call it by, and the class; ``codec_for_id`` (reading a block)
and ``codec_by_name`` (writing one) both look codecs up there, and ``tests/test_golden.py``
checks FORMAT.md's codec table against it.  A new codec is a class and a row.

Decoding has one path, ``decompress_into(data, out)``, which every caller uses (``decompress``
only allocates ``out`` first): the read-back of a merge, ``verify --deep``, ``iter_events`` and
the ``--skip-bad`` look-ahead all decode the same way, so they cannot disagree on a block.
Before a byte is decoded, a zstd block must be exactly one standard frame that declares the
content size the (digest-checked) block header promises and ends exactly where the stored
bytes end: no second frame, no skippable frame, no trailing bytes (``check_zstd_frame``).  The
output then goes into a buffer of exactly that length, so a hostile frame can never make us
allocate or produce more than the header promises (zstd also bounds its window by the declared
content size).  zstd compressor/decompressor objects are not thread-safe, so each thread keeps
its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import zstandard

from .errors import DecompressionError, UsageError
from .format import CODEC_NONE, CODEC_ZSTD

DEFAULT_ZSTD_LEVEL = 3


class Codec(Protocol):
    """What every codec offers: its id and name (its row in ``CODECS``) and the transforms."""

    codec_id: ClassVar[int]
    name: ClassVar[str]
    #: Compression levels the codec accepts (``None``: it has no levels).
    levels: ClassVar[range | None]

    def compress(self, data) -> bytes:
        """The stored bytes of ``data`` (a block's record bytes)."""
        ...

    def decompress(self, data, length: int):
        """The record bytes of stored ``data``, which must decode to exactly ``length`` bytes."""
        ...

    def decompress_into(self, data, out: memoryview) -> None:
        """Decode ``data`` into ``out``, which is exactly the record bytes' length."""
        ...


@dataclass(frozen=True)
class NoneCodec:
    """Codec ``none``: the stored bytes are the record bytes themselves."""

    codec_id: ClassVar[int] = CODEC_NONE
    name: ClassVar[str] = "none"
    levels: ClassVar[range | None] = None

    def compress(self, data) -> bytes:
        """The record bytes, as they are."""
        return bytes(data)

    def decompress(self, data, length: int) -> bytes:
        """``data`` itself, which must be ``length`` bytes."""
        if len(data) != length:
            raise DecompressionError(f"stored block is {len(data)} bytes, header says {length}")
        return data

    def decompress_into(self, data, out: memoryview) -> None:
        """Copy ``data`` into ``out`` (the same length)."""
        if len(data) != len(out):
            raise DecompressionError(f"stored block is {len(data)} bytes, header says {len(out)}")
        out[:] = data


_local = threading.local()


@dataclass(frozen=True)
class ZstdCodec:
    """Codec ``zstd``: one zstd frame of the record bytes, declaring its content size."""

    level: int = DEFAULT_ZSTD_LEVEL
    codec_id: ClassVar[int] = CODEC_ZSTD
    name: ClassVar[str] = "zstd"
    levels: ClassVar[range | None] = range(-7, 23)

    def _compressor(self) -> zstandard.ZstdCompressor:
        cache = _local.__dict__.setdefault("compressors", {})
        comp = cache.get(self.level)
        if comp is None:
            comp = cache[self.level] = zstandard.ZstdCompressor(
                level=self.level, write_checksum=False
            )
        return comp

    def compress(self, data) -> bytes:
        """One zstd frame of ``data`` at this codec's level (content size declared, no checksum)."""
        return self._compressor().compress(data)

    def decompress(self, data, length: int) -> np.ndarray:
        """The decoded bytes, in a new buffer of exactly ``length`` bytes (see
        ``decompress_into``)."""
        check_zstd_frame(data, length)  # before the buffer is allocated
        out = np.empty(length, dtype=np.uint8)
        self.decompress_into(data, out.data, checked=True)
        return out

    def decompress_into(self, data, out: memoryview, *, checked: bool = False) -> None:
        """Decompress into ``out``, which must be exactly the uncompressed length (no allocation).

        The frame is checked first (``check_zstd_frame``) unless the caller just did."""
        if not checked:
            check_zstd_frame(data, len(out))
        dctx = getattr(_local, "decompressor", None)
        if dctx is None:
            dctx = _local.decompressor = zstandard.ZstdDecompressor()
        filled = 0
        try:
            with dctx.stream_reader(data) as reader:
                while filled < len(out):
                    got = reader.readinto(out[filled:])
                    if not got:
                        break
                    filled += got
                extra = reader.read(1) if filled == len(out) else b""
        except zstandard.ZstdError as exc:
            raise DecompressionError(f"zstd cannot decode the block: {exc}") from exc
        if filled != len(out) or extra:
            raise DecompressionError(
                f"block decodes to {'more than ' if extra else ''}{filled} bytes, "
                f"header says {len(out)}"
            )


ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_CHECKSUM_BYTES = 4


def check_zstd_frame(data, length: int) -> None:
    """Refuse stored bytes that are not exactly one zstd frame declaring ``length`` bytes of
    content.

    Reads the frame header and walks the 3-byte block headers only (``walker.zstd_frame_end``),
    so it costs microseconds and allocates nothing, whatever the frame claims.
    """
    head = bytes(memoryview(data)[:18])
    if head[:4] != ZSTD_FRAME_MAGIC:
        what = (
            "a skippable zstd frame"
            if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"
            else f"bytes {head[:4].hex()}"
        )
        raise DecompressionError(f"stored bytes start with {what}, not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(head)
        header_size = zstandard.frame_header_size(head)
    except zstandard.ZstdError as exc:
        raise DecompressionError(f"zstd frame header is invalid: {exc}") from exc
    if params.content_size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise DecompressionError(
            f"zstd frame does not declare its content size (the header says {length})"
        )
    if params.content_size != length:
        raise DecompressionError(
            f"zstd frame declares {params.content_size} bytes, the header says {length}"
        )
    from .walker import FRAME_BAD_BLOCK, zstd_frame_end

    end = zstd_frame_end(data, header_size)
    if end == FRAME_BAD_BLOCK:
        raise DecompressionError("zstd frame holds a block of a reserved type or over 128 KiB")
    if end >= 0 and params.has_checksum:
        end += ZSTD_CHECKSUM_BYTES
    if end < 0 or end > len(data):
        raise DecompressionError(
            f"zstd frame runs past the end of the block's {len(data)} stored bytes"
        )
    if end != len(data):
        raise DecompressionError(
            f"{len(data) - end} bytes follow the zstd frame in the block's stored bytes"
        )


#: The codecs, by the id a block header stores: the one table of ids, names and classes.
CODECS: dict[int, type[Codec]] = {codec.codec_id: codec for codec in (NoneCodec, ZstdCodec)}
_BY_NAME: dict[str, type[Codec]] = {codec.name: codec for codec in CODECS.values()}
# each codec at its default level, shared: codecs are frozen and keep per-thread state elsewhere
_DEFAULTS: dict[int, Codec] = {codec_id: codec() for codec_id, codec in CODECS.items()}


def codec_name(codec_id: int) -> str:
    """The name of the codec stored as ``codec_id`` (``id 7`` for an id no codec has)."""
    codec = CODECS.get(codec_id)
    return codec.name if codec is not None else f"id {codec_id}"


def codec_for_id(codec_id: int, level: int | None = None) -> Codec:
    """The codec a block header's codec byte names (``DecompressionError`` for an unknown id)."""
    codec = CODECS.get(codec_id)
    if codec is None:
        raise DecompressionError(f"unknown codec id {codec_id}")
    if level is None or codec.levels is None:
        return _DEFAULTS[codec_id]
    return codec(level)  # type: ignore[call-arg]


def codec_by_name(name: str, level: int | None = None) -> Codec:
    """The codec called ``name`` at ``level`` (its default when None), for writing blocks.

    An unknown name or a level out of the codec's range is a ``UsageError``; a level given to a
    codec without levels (``none``) is ignored."""
    codec = _BY_NAME.get(name)
    if codec is None:
        raise UsageError(f"unknown codec {name!r} (choose from {', '.join(sorted(_BY_NAME))})")
    if level is not None and codec.levels is not None and level not in codec.levels:
        low, high = codec.levels[0], codec.levels[-1]
        raise UsageError(f"{name} level {level} out of range {low}..{high}")
    return codec_for_id(codec.codec_id, level)
