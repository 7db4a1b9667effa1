"""Block codecs: the transforms between a block's record bytes and its stored bytes.

A codec is a small frozen object with ``compress(data)`` and ``decompress(data, length)``; the
block header's one-byte codec id (see ``engine.format.CODEC_NAMES``) picks it.  ``decompress``
is bounded by the length the (already digest-checked) header promises, so a hostile frame can
never make us allocate more.  zstd compressor/decompressor objects are not thread-safe, so each
thread keeps its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from .errors import DecompressionError, UsageError
from .format import CODEC_IDS, CODEC_NONE, CODEC_ZSTD

DEFAULT_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class NoneCodec:
    codec_id: int = CODEC_NONE
    name: str = "none"

    def compress(self, data) -> bytes:
        return bytes(data)

    def decompress(self, data, length: int) -> bytes:
        if len(data) != length:
            raise DecompressionError(f"stored block is {len(data)} bytes, header says {length}")
        return data

    def decompress_into(self, data, out: memoryview) -> None:
        if len(data) != len(out):
            raise DecompressionError(f"stored block is {len(data)} bytes, header says {len(out)}")
        out[:] = data


_local = threading.local()


@dataclass(frozen=True)
class ZstdCodec:
    level: int = DEFAULT_ZSTD_LEVEL
    codec_id: int = CODEC_ZSTD
    name: str = "zstd"

    def _compressor(self) -> zstandard.ZstdCompressor:
        cache = _local.__dict__.setdefault("compressors", {})
        comp = cache.get(self.level)
        if comp is None:
            comp = cache[self.level] = zstandard.ZstdCompressor(level=self.level, write_checksum=False)
        return comp

    def compress(self, data) -> bytes:
        return self._compressor().compress(data)

    def decompress(self, data, length: int) -> bytes:
        dctx = getattr(_local, "decompressor", None)
        if dctx is None:
            dctx = _local.decompressor = zstandard.ZstdDecompressor()
        try:
            out = dctx.decompress(data, max_output_size=length)
        except zstandard.ZstdError as exc:
            raise DecompressionError(f"zstd cannot decode the block: {exc}")
        if len(out) != length:
            raise DecompressionError(f"block decodes to {len(out)} bytes, header says {length}")
        return out

    def decompress_into(self, data, out: memoryview) -> None:
        """Decompress into ``out``, which must be exactly the uncompressed length (no allocation)."""
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
            raise DecompressionError(f"zstd cannot decode the block: {exc}")
        if filled != len(out) or extra:
            raise DecompressionError(f"block decodes to {'more than ' if extra else ''}{filled} bytes, "
                                     f"header says {len(out)}")


def codec_for_id(codec_id: int, level: int = DEFAULT_ZSTD_LEVEL):
    if codec_id == CODEC_ZSTD:
        return ZstdCodec(level)
    if codec_id == CODEC_NONE:
        return NoneCodec()
    raise DecompressionError(f"unknown codec id {codec_id}")


def codec_by_name(name: str, level: int | None = None):
    if name not in CODEC_IDS:
        raise UsageError(f"unknown codec {name!r} (choose from {', '.join(sorted(CODEC_IDS))})")
    if name == "zstd":
        if level is not None and not (-7 <= level <= 22):
            raise UsageError(f"zstd level {level} out of range -7..22")
        return ZstdCodec(DEFAULT_ZSTD_LEVEL if level is None else level)
    return NoneCodec()
