"""The TMB container's byte layout: every struct, magic number, bound and parse/pack function.

This is the only module that knows where bytes sit in a ``.tmb`` file; ``docs/FORMAT.md`` is its
table form and changes with it.  Readers, writer and verifiers call the ``parse_*`` functions
here (which validate and raise ``engine.errors`` classes naming the region and offset) and the
``pack_*`` functions (which produce exact bytes).  Nothing here does I/O.

A file is, in order and with no gaps::

    header (64 B) | metadata (JSON) | block 0 | block 1 | ... | index | trailer (64 B)

Every byte is under a checksum: the header carries its own xxh3-64 and the metadata's; every
block header carries its own and those of its compressed and uncompressed bytes; the trailer
carries the index's and its own; the end magic is compared literally; and the regions must
tile the file exactly.  All integers are little-endian.
"""

from __future__ import annotations

import json
import struct
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import xxhash

from .checksums import digest_hex, xxh3_64
from .errors import (
    ChecksumMismatch,
    FormatError,
    LayoutError,
    MetadataError,
    NotATmbFile,
    TruncatedFile,
    UnsupportedVersion,
)

FORMAT_VERSION = 1

# Bounds on lengths read from a file, checked before anything is allocated.
MAX_METADATA_BYTES = 16 << 20
MAX_BLOCK_BYTES = 256 << 20  # uncompressed (and compressed) size of one block
DEFAULT_BLOCK_BYTES = 4 << 20  # target uncompressed size at which the writer cuts blocks
MAX_COMPRESSED_OVERHEAD = (MAX_BLOCK_BYTES >> 8) + (1 << 17)  # above ZSTD_compressBound's margin

# ---------------------------------------------------------------------------------------------
# File header: 64 bytes at offset 0
HEADER_MAGIC = b"\x89TMB\r\n\x1a\n"
HEADER = struct.Struct("<8sHHI16sIIQQQ")
HEADER_SIZE = HEADER.size  # 64
assert HEADER_SIZE == 64


class FileHeader(NamedTuple):
    """The file header's fields, once its magic, version, digest and bounds are checked."""

    version: int
    flags: int
    uuid: uuidlib.UUID
    metadata_length: int
    metadata_digest: int


def pack_header(file_uuid: uuidlib.UUID, metadata: bytes) -> bytes:
    """The 64 header bytes of a file with this UUID and these metadata bytes (digests included)."""
    body = HEADER.pack(
        HEADER_MAGIC,
        FORMAT_VERSION,
        HEADER_SIZE,
        0,
        file_uuid.bytes,
        len(metadata),
        0,
        xxh3_64(metadata),
        0,
        0,
    )
    return body[:56] + struct.pack("<Q", xxh3_64(body[:56]))


def header_with_damaged_magic(buf: bytes) -> bool:
    """Is ``buf`` a TMB header whose magic alone is damaged?  Its digest (over bytes 0..55, magic
    included) then matches once the true magic is put back: the file is a damaged TMB file
    (integrity, exit 5), not a foreign one (exit 4)."""
    if len(buf) < HEADER_SIZE or bytes(buf[:8]) == HEADER_MAGIC:
        return False
    body = HEADER_MAGIC + bytes(buf[8:56])
    return xxh3_64(body) == struct.unpack("<Q", bytes(buf[56:64]))[0]


def parse_header(buf: bytes, file_size: int) -> FileHeader:
    """Validate the 64-byte file header (magic, version, digest, bounds)."""
    if len(buf) < HEADER_SIZE:
        if HEADER_MAGIC.startswith(bytes(buf[: len(HEADER_MAGIC)])) and len(buf) > 0:
            raise TruncatedFile(
                f"file is {file_size} bytes, shorter than a TMB header", region="header", offset=0
            )
        raise NotATmbFile("not a TMB file (too short for a header)", region="header", offset=0)
    magic, version, hsize, flags, raw_uuid, mlen, reserved1, mdigest, reserved2, digest = (
        HEADER.unpack(bytes(buf[:HEADER_SIZE]))
    )
    if magic != HEADER_MAGIC:
        if magic[:4] == HEADER_MAGIC[:4]:
            raise ChecksumMismatch(
                "damaged file magic",
                region="header",
                offset=0,
                expected=HEADER_MAGIC.hex(),
                actual=magic.hex(),
            )
        raise NotATmbFile("not a TMB file (unknown magic bytes)", region="header", offset=0)
    computed = xxh3_64(bytes(buf[:56]))
    if computed != digest:
        raise ChecksumMismatch(
            "header digest differs",
            region="header",
            offset=56,
            expected=digest_hex(digest),
            actual=digest_hex(computed),
        )
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(
            f"format version {version} is not supported (this reads {FORMAT_VERSION})",
            region="header",
            offset=8,
        )
    if hsize != HEADER_SIZE or flags != 0 or reserved1 != 0 or reserved2 != 0:
        raise LayoutError(
            "header has non-zero reserved fields or a wrong size", region="header", offset=10
        )
    if mlen > MAX_METADATA_BYTES or HEADER_SIZE + mlen + TRAILER_SIZE > file_size:
        raise LayoutError(
            f"metadata length {mlen} is impossible for a {file_size}-byte file",
            region="header",
            offset=32,
        )
    return FileHeader(version, flags, uuidlib.UUID(bytes=raw_uuid), mlen, mdigest)


# ---------------------------------------------------------------------------------------------
# Metadata: UTF-8 JSON object right after the header


def pack_metadata(metadata: dict) -> bytes:
    """The metadata's stored bytes: JSON with sorted keys and no whitespace, within the bound."""
    data = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {len(data)} bytes, more than {MAX_METADATA_BYTES}")
    return data


def parse_metadata(buf: bytes, header: FileHeader) -> dict:
    """The metadata object in ``buf``, checked against the header's digest, parsed with limits."""
    computed = xxh3_64(buf)
    if computed != header.metadata_digest:
        raise ChecksumMismatch(
            "metadata digest differs",
            region="metadata",
            offset=HEADER_SIZE,
            expected=digest_hex(header.metadata_digest),
            actual=digest_hex(computed),
        )
    from .safejson import parse_json

    try:
        value = parse_json(buf, what="metadata")  # depth, number and string limits: see safejson
    except MetadataError as exc:
        raise MetadataError(exc.message, region="metadata", offset=HEADER_SIZE) from None
    if not isinstance(value, dict):
        raise MetadataError("metadata is not a JSON object", region="metadata", offset=HEADER_SIZE)
    return value


# ---------------------------------------------------------------------------------------------
# Block header: 48 bytes before each block's (compressed) bytes
BLOCK_MAGIC = b"TMBK"
BLOCK_HEADER = struct.Struct("<4sBBHIIIIQQQ")
BLOCK_HEADER_SIZE = BLOCK_HEADER.size  # 48
assert BLOCK_HEADER_SIZE == 48

# The codec byte's values; the table of codecs (ids, names, classes) is ``engine.codecs.CODECS``.
CODEC_NONE = 0
CODEC_ZSTD = 1


class BlockHeader(NamedTuple):
    """A block header's fields, once its magic, digest, reserved fields and bounds are checked."""

    codec: int
    compressed_length: int
    uncompressed_length: int
    event_count: int
    compressed_digest: int
    uncompressed_digest: int


def pack_block_header(h: BlockHeader) -> bytes:
    """The 48 bytes of a block header (its own digest included)."""
    body = BLOCK_HEADER.pack(
        BLOCK_MAGIC,
        h.codec,
        0,
        0,
        h.compressed_length,
        h.uncompressed_length,
        h.event_count,
        0,
        h.compressed_digest,
        h.uncompressed_digest,
        0,
    )
    return body[:40] + struct.pack("<Q", xxh3_64(body[:40]))


def parse_block_header(buf: bytes | memoryview, *, region: str, offset: int) -> BlockHeader:
    """Validate a block header; the block's bytes are not touched."""
    if len(buf) < BLOCK_HEADER_SIZE:
        raise TruncatedFile("block header cut short", region=region, offset=offset)
    magic, codec, flags, reserved1, clen, ulen, nev, reserved2, cdig, udig, digest = (
        BLOCK_HEADER.unpack(bytes(buf[:BLOCK_HEADER_SIZE]))
    )
    computed = xxh3_64(bytes(buf[:40]))
    if magic != BLOCK_MAGIC:
        raise LayoutError(
            "no block magic where a block should start",
            region=region,
            offset=offset,
            expected=BLOCK_MAGIC.hex(),
            actual=magic.hex(),
        )
    if computed != digest:
        raise ChecksumMismatch(
            "block header digest differs",
            region=region,
            offset=offset + 40,
            expected=digest_hex(digest),
            actual=digest_hex(computed),
        )
    if flags or reserved1 or reserved2:
        raise LayoutError("block header has non-zero reserved fields", region=region, offset=offset)
    header = BlockHeader(codec, clen, ulen, nev, cdig, udig)
    check_block_bounds(header, region=region, offset=offset)
    return header


def check_block_bounds(h: BlockHeader, *, region: str, offset: int) -> None:
    """A block header's codec is known and its lengths and event count are possible."""
    from .codecs import CODECS  # the codec table imports this module

    if h.codec not in CODECS:
        raise FormatError(f"unknown codec id {h.codec}", region=region, offset=offset + 4)
    if (
        h.uncompressed_length > MAX_BLOCK_BYTES
        or h.compressed_length > MAX_BLOCK_BYTES + MAX_COMPRESSED_OVERHEAD
    ):
        raise LayoutError(
            f"block lengths {h.compressed_length}/{h.uncompressed_length} exceed the "
            f"{MAX_BLOCK_BYTES}-byte bound",
            region=region,
            offset=offset + 8,
        )
    if h.codec == CODEC_NONE and h.compressed_length != h.uncompressed_length:
        raise LayoutError(
            "uncompressed block with differing lengths",
            region=region,
            offset=offset + 8,
            expected=h.uncompressed_length,
            actual=h.compressed_length,
        )
    if h.event_count == 0 or h.event_count * RECORD_HEADER_SIZE > h.uncompressed_length:
        raise LayoutError(
            f"block claims {h.event_count} events in {h.uncompressed_length} bytes",
            region=region,
            offset=offset + 16,
        )


# ---------------------------------------------------------------------------------------------
# Event records inside a decompressed block: 16-byte header then the payload, back to back
RECORD_HEADER = struct.Struct("<IQI")  # run, event number, payload length
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 16
assert RECORD_HEADER_SIZE == 16
MAX_PAYLOAD_BYTES = MAX_BLOCK_BYTES - RECORD_HEADER_SIZE

# ---------------------------------------------------------------------------------------------
# Index: a 32-byte header, the block table, then the event table as columns
INDEX_MAGIC = b"TMBI"
INDEX_HEADER = struct.Struct("<4sIQQQ")
INDEX_HEADER_SIZE = INDEX_HEADER.size  # 32
assert INDEX_HEADER_SIZE == 32

BLOCK_DTYPE = np.dtype(
    [
        ("offset", "<u8"),  # file offset of the block header
        ("compressed_length", "<u4"),
        ("uncompressed_length", "<u4"),
        ("event_count", "<u4"),
        ("codec", "u1"),
        ("pad", "V3"),
        ("first_event", "<u8"),  # position in the event table of the block's first event
        ("compressed_digest", "<u8"),
        ("uncompressed_digest", "<u8"),
    ]
)
assert BLOCK_DTYPE.itemsize == 48
BLOCK_COLUMNS = tuple(name for name in BLOCK_DTYPE.names or () if name != "pad")


def block_table(entries) -> np.ndarray:
    """A block table from (offset, first_event, BlockHeader) of each block, in file order."""
    table = np.zeros(len(entries), dtype=BLOCK_DTYPE)
    if entries:
        table["offset"] = [offset for offset, _, _ in entries]
        table["first_event"] = [first for _, first, _ in entries]
        for name in BlockHeader._fields:
            table[name] = [getattr(header, name) for _, _, header in entries]
    return table


# Event table columns, in file order (8-byte columns first).
EVENT_COLUMNS = (
    ("event", "<u8"),
    ("digest", "<u8"),
    ("run", "<u4"),
    ("length", "<u4"),
    ("block", "<u4"),
)
EVENT_BYTES = sum(np.dtype(t).itemsize for _, t in EVENT_COLUMNS)  # 28


@dataclass(frozen=True, slots=True)
class EventTable:
    """One file's (or block's) events as numpy columns; read-only views of the index when loaded."""

    event: np.ndarray  # u8 event number
    digest: np.ndarray  # u8 xxh3-64 of the payload
    run: np.ndarray  # u4
    length: np.ndarray  # u4 payload length
    block: np.ndarray  # u4 block number in the file

    def __len__(self) -> int:
        return len(self.event)

    def columns(self) -> tuple[np.ndarray, ...]:
        """The five columns, in ``EVENT_COLUMNS`` order."""
        return (self.event, self.digest, self.run, self.length, self.block)

    def replace(self, **columns) -> EventTable:
        """A copy with some columns replaced."""
        return replace(self, **columns)

    def slice(self, start: int, stop: int) -> EventTable:
        """Rows ``start`` to ``stop`` (exclusive), as views of these columns."""
        return EventTable(*(col[start:stop] for col in self.columns()))

    def runs(self) -> list[int]:
        """The distinct run numbers, sorted (one run, the usual case, without ``np.unique``, whose
        first call imports ``numpy.ma``: tens of ms of a small merge's start-up)."""
        if not len(self.run):
            return []
        low, high = int(self.run.min()), int(self.run.max())
        return [low] if low == high else np.unique(self.run).tolist()


class Index(NamedTuple):
    """A parsed index: the block table and the event table."""

    blocks: np.ndarray  # BLOCK_DTYPE
    events: EventTable


def index_length(block_count: int, event_count: int) -> int:
    """Bytes of the index of a file with these counts."""
    return INDEX_HEADER_SIZE + block_count * BLOCK_DTYPE.itemsize + event_count * EVENT_BYTES


def iter_index_parts(blocks: np.ndarray, tables) -> Iterator[memoryview]:
    """The index's bytes, in order, for events given as several tables (one per block, say):
    each column is written table after table, so the index is never built whole in memory."""
    tables = list(tables)
    return index_parts(
        blocks, sum(len(t) for t in tables), lambda column: (t.columns()[column] for t in tables)
    )


def index_parts(blocks: np.ndarray, event_count: int, column_pieces) -> Iterator[memoryview]:
    """The index's bytes, in order; ``column_pieces(i)`` yields the pieces of event column ``i``
    (``EVENT_COLUMNS`` order), which may come from anywhere (memory, a spool file)."""
    yield memoryview(INDEX_HEADER.pack(INDEX_MAGIC, 0, len(blocks), event_count, 0))
    yield np.ascontiguousarray(blocks, dtype=BLOCK_DTYPE).data.cast("B")
    for column, (_, dtype) in enumerate(EVENT_COLUMNS):
        for piece in column_pieces(column):
            yield np.ascontiguousarray(piece, dtype=dtype).data.cast("B")


def pack_index(blocks: np.ndarray, events: EventTable) -> bytes:
    """The index's bytes, whole (small files; writers stream them with ``index_parts``)."""
    return b"".join(iter_index_parts(blocks, [events]))


def parse_index(buf, *, offset: int, digest: int, data_start: int) -> Index:
    """Validate the index bytes (digest, counts, block tiling, event-to-block mapping).

    ``buf`` must be exactly the index region; arrays are read-only views on it.
    """
    view = memoryview(buf)
    blocks, nevents = check_index(
        lambda at, n: view[at - offset : at - offset + n],
        offset=offset,
        length=len(buf),
        digest=digest,
        data_start=data_start,
    )
    pos = INDEX_HEADER_SIZE + blocks.nbytes
    columns = []
    for _, dtype in EVENT_COLUMNS:
        col = np.frombuffer(buf, dtype=dtype, count=nevents, offset=pos)
        columns.append(col)
        pos += col.nbytes
    return Index(blocks, EventTable(*columns))


#: Rows of one event column read at a time when an index is checked or streamed
#: (28 B each: 1.8 MiB).
INDEX_CHUNK_EVENTS = 1 << 16


def event_column_offsets(index_offset: int, nblocks: int, nevents: int) -> list[int]:
    """File offset of each event column (``EVENT_COLUMNS`` order) of an index at
    ``index_offset``."""
    pos = index_offset + INDEX_HEADER_SIZE + nblocks * BLOCK_DTYPE.itemsize
    offsets = []
    for _, dtype in EVENT_COLUMNS:
        offsets.append(pos)
        pos += nevents * np.dtype(dtype).itemsize
    return offsets


def check_index(
    read,
    *,
    offset: int,
    length: int,
    digest: int,
    data_start: int,
    chunk_events: int = INDEX_CHUNK_EVENTS,
) -> tuple[np.ndarray, int]:
    """Validate an index region of ``length`` bytes at file ``offset``, read piece by piece with
    ``read(file_offset, n) -> bytes``: its digest, header, block tiling and the agreement of every
    event with its block.  Returns (block table, event count).

    Memory is the block table (48 B per block) and one chunk of one column, whatever the number of
    events: a file of 10 million events is checked in 2 MiB pieces.  The digest is checked before
    anything the index says is believed.
    """
    hasher = xxhash.xxh3_64()

    def take(at: int, n: int) -> bytes:
        piece = read(at, n)
        if len(piece) != n:
            raise TruncatedFile(
                "file ends inside the index", region="index", offset=at + len(piece)
            )
        hasher.update(piece)
        return piece

    def digest_or_raise() -> None:
        computed = hasher.intdigest()
        if computed != digest:
            raise ChecksumMismatch(
                "index digest differs",
                region="index",
                offset=offset,
                expected=digest_hex(digest),
                actual=digest_hex(computed),
            )

    def hash_rest(start: int) -> None:
        for at in range(start, offset + length, INDEX_CHUNK_EVENTS * 8):
            take(at, min(INDEX_CHUNK_EVENTS * 8, offset + length - at))

    head = take(offset, min(length, INDEX_HEADER_SIZE))
    if len(head) < INDEX_HEADER_SIZE:
        digest_or_raise()
        raise LayoutError("index shorter than its header", region="index", offset=offset)
    magic, reserved1, nblocks, nevents, reserved2 = INDEX_HEADER.unpack(bytes(head))
    if magic != INDEX_MAGIC or reserved1 or reserved2 or index_length(nblocks, nevents) != length:
        hash_rest(offset + INDEX_HEADER_SIZE)
        digest_or_raise()
        if magic != INDEX_MAGIC or reserved1 or reserved2:
            raise LayoutError("bad index header", region="index", offset=offset)
        raise LayoutError(
            f"index of {length} bytes cannot hold {nblocks} blocks and {nevents} events",
            region="index",
            offset=offset,
        )
    table_bytes = take(offset + INDEX_HEADER_SIZE, nblocks * BLOCK_DTYPE.itemsize)
    blocks = np.frombuffer(table_bytes, dtype=BLOCK_DTYPE, count=nblocks)
    counts = blocks["event_count"].astype(np.int64)
    ends = np.cumsum(counts)
    # every block holds events (else the table is refused below): each chunk's events then fall
    # in whole runs of blocks, found from the block table, never per event
    consistent = nblocks > 0 and int(ends[-1]) == nevents and bool(np.all(counts > 0))
    starts = ends - counts
    record_bytes = np.zeros(nblocks, dtype=np.int64)
    blocks_agree = True
    for (name, dtype), at in zip(
        EVENT_COLUMNS, event_column_offsets(offset, nblocks, nevents), strict=True
    ):
        size = np.dtype(dtype).itemsize
        for start in range(0, nevents, chunk_events):
            stop = min(start + chunk_events, nevents)
            piece = take(at + start * size, (stop - start) * size)
            if not consistent or name not in ("length", "block"):
                continue
            column = np.frombuffer(piece, dtype=dtype)
            # blocks first..last hold this chunk's events; where each one's start in the chunk is
            first = int(np.searchsorted(ends, start, side="right"))
            last = int(np.searchsorted(ends, stop - 1, side="right"))
            cuts = np.maximum(starts[first : last + 1], start) - start
            if name == "block":
                if blocks_agree:
                    spans = np.diff(cuts, append=stop - start)
                    owner = np.repeat(np.arange(first, last + 1, dtype=column.dtype), spans)
                    blocks_agree = np.array_equal(column, owner)
            else:
                sums = np.add.reduceat(column, cuts, dtype=np.int64)
                record_bytes[first : last + 1] += sums
    digest_or_raise()
    check_block_table(blocks, nevents, data_start=data_start, data_end=offset)
    if not blocks_agree:
        raise LayoutError(
            "event table's block numbers disagree with the block table",
            region="index",
            offset=offset,
        )
    record_bytes += RECORD_HEADER_SIZE * counts
    if not np.array_equal(record_bytes, blocks["uncompressed_length"].astype(np.int64)):
        bad = _first_false(record_bytes == blocks["uncompressed_length"])
        raise LayoutError(
            f"event lengths do not add up to block {bad}'s size", region="index", offset=offset
        )
    return blocks, nevents


def check_block_table(blocks: np.ndarray, nevents: int, *, data_start: int, data_end: int) -> None:
    """Blocks tile [data_start, data_end) exactly and their event counts add up to ``nevents``."""
    nblocks = len(blocks)
    if nblocks == 0:
        if data_start != data_end or nevents:
            raise LayoutError(
                "index lists no blocks but the file has block bytes or events",
                region="index",
                offset=data_end,
            )
        return
    ends = blocks["offset"] + BLOCK_HEADER_SIZE + blocks["compressed_length"].astype(np.uint64)
    starts_ok = blocks["offset"][0] == data_start and np.array_equal(
        blocks["offset"][1:], ends[:-1]
    )
    if not starts_ok or ends[-1] != data_end:
        bad = _first_false(
            np.concatenate([[blocks["offset"][0] == data_start], blocks["offset"][1:] == ends[:-1]])
        )
        raise LayoutError(
            f"block table does not tile the file (block {bad})", region="index", offset=data_end
        )
    counts = blocks["event_count"].astype(np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if counts.sum() != nevents or not np.array_equal(
        blocks["first_event"], firsts.astype(np.uint64)
    ):
        raise LayoutError(
            "block event counts do not add up to the event table", region="index", offset=data_end
        )
    if np.any(counts == 0) or np.any(blocks["uncompressed_length"] > MAX_BLOCK_BYTES):
        raise LayoutError(
            "index lists an empty or oversized block", region="index", offset=data_end
        )


def _first_false(mask) -> int:
    return int(np.argmin(mask)) if not np.all(mask) else -1


# ---------------------------------------------------------------------------------------------
# Trailer: the last 64 bytes of every complete file
TRAILER_MAGIC = b"TMBT"
END_MAGIC = b"TMB:END\n"
TRAILER = struct.Struct("<4sHHQQQQQQ8s")
TRAILER_SIZE = TRAILER.size  # 64
assert TRAILER_SIZE == 64


class Trailer(NamedTuple):
    """The trailer's fields, once its magics, digest, version and relations are checked."""

    index_offset: int
    index_length: int
    index_digest: int
    event_count: int
    block_count: int


def pack_trailer(t: Trailer) -> bytes:
    """The 64 trailer bytes (digest and end magic included)."""
    body = TRAILER.pack(
        TRAILER_MAGIC,
        FORMAT_VERSION,
        0,
        t.index_offset,
        t.index_length,
        t.index_digest,
        t.event_count,
        t.block_count,
        0,
        END_MAGIC,
    )
    return body[:48] + struct.pack("<Q", xxh3_64(body[:48])) + END_MAGIC


def parse_trailer(buf: bytes, file_size: int, data_start: int) -> Trailer:
    """Validate the trailer (the file's last 64 bytes). No valid trailer means a truncated file."""
    offset = file_size - TRAILER_SIZE
    if len(buf) < TRAILER_SIZE or file_size < HEADER_SIZE + TRAILER_SIZE:
        raise TruncatedFile(
            f"file of {file_size} bytes has no room for a trailer",
            region="trailer",
            offset=max(offset, 0),
        )
    magic, version, reserved, ioff, ilen, idig, nev, nblk, digest, end = TRAILER.unpack(
        bytes(buf[-TRAILER_SIZE:])
    )
    if end != END_MAGIC or magic != TRAILER_MAGIC:
        raise TruncatedFile(
            "no valid trailer at the end of the file (truncated or damaged)",
            region="trailer",
            offset=offset,
        )
    computed = xxh3_64(bytes(buf[-TRAILER_SIZE:][:48]))
    if computed != digest:
        raise ChecksumMismatch(
            "trailer digest differs",
            region="trailer",
            offset=offset + 48,
            expected=digest_hex(digest),
            actual=digest_hex(computed),
        )
    if version != FORMAT_VERSION or reserved:
        raise UnsupportedVersion(
            f"trailer format version {version} is not supported",
            region="trailer",
            offset=offset + 4,
        )
    if ioff + ilen != offset or ioff < data_start:
        raise LayoutError(
            f"index at {ioff}+{ilen} does not end where the trailer starts",
            region="trailer",
            offset=offset + 8,
        )
    if index_length(nblk, nev) != ilen:
        raise LayoutError(
            f"index length {ilen} does not fit {nblk} blocks and {nev} events",
            region="trailer",
            offset=offset + 16,
        )
    return Trailer(ioff, ilen, idig, nev, nblk)


# ---------------------------------------------------------------------------------------------
# Regions, for messages: which named part of a file holds a byte offset


def region_at(
    offset: int,
    *,
    metadata_length: int,
    blocks: np.ndarray | None,
    index_offset: int,
    file_size: int,
) -> str:
    """The region holding file ``offset`` (``header``, ``block 3``, ``index``...), for messages."""
    if offset < HEADER_SIZE:
        return "header"
    if offset < HEADER_SIZE + metadata_length:
        return "metadata"
    if offset >= file_size - TRAILER_SIZE:
        return "trailer"
    if offset >= index_offset:
        return "index"
    if blocks is not None and len(blocks):
        n = int(np.searchsorted(blocks["offset"], offset, side="right")) - 1
        return f"block {max(n, 0)}"
    return "blocks"
