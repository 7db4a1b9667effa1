"""One block at a time: build a block from events, check a stored block, decode it back to events.

The operations every other part of the engine composes:

- ``read_block``: read one stored block from a block source (``engine.source``) and fast-check
  it: the one read-and-check of a block, used by a reader streaming its file
  (``iter_blocks``, ``check_blocks``) and by a merge reading its output back
  (``verify.readback``), so all of them refuse exactly the same blocks the same way.
- ``build_block``: event columns -> framed record bytes -> compressed, digested block
  (header bytes + stored bytes + the block's event table).
- ``check_stored_block``: the fast-path check (header digest, agreement with the index entry,
  xxh3 of the stored bytes); never decompresses.
- ``decode_block``: the deep check: decompress, check the block's uncompressed digest, walk
  the record framing and recompute every payload digest (``walker``, compiled code), and prove
  the events against the index entries they were listed with.

Compiled code is loaded on first use only: building blocks loads numba (``kernels``), decoding
them llvmlite (``walker``); the fast path loads neither.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checksums import digest_hex, xxh3_64
from .codecs import codec_for_id
from .errors import (
    ChecksumMismatch,
    EngineError,
    FramingError,
    IndexMismatch,
    IntegrityError,
    LayoutError,
    TruncatedFile,
)
from .format import (
    BLOCK_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    BlockHeader,
    EventTable,
    pack_block_header,
    parse_block_header,
)


class BuiltBlock(NamedTuple):
    """A block made from events: its header (as a tuple and as bytes), stored bytes, events."""

    header: BlockHeader
    header_bytes: bytes
    data: bytes  # stored (compressed) bytes
    events: EventTable  # block column zero: the writer renumbers


class DecodedBlock(NamedTuple):
    """A block decoded and proven: its record bytes, its events, where each payload starts."""

    records: memoryview  # the uncompressed record bytes
    events: EventTable  # block column zero
    payload_offsets: np.ndarray  # u8, offset of each payload inside ``records``

    def payload(self, i: int) -> memoryview:
        """Event ``i``'s payload, a view into ``records`` (no copy)."""
        start = int(self.payload_offsets[i])
        return memoryview(self.records)[start : start + int(self.events.length[i])]


def build_block(
    runs: np.ndarray,
    events: np.ndarray,
    lengths: np.ndarray,
    payloads: np.ndarray,
    payload_starts: np.ndarray,
    codec,
) -> BuiltBlock:
    """Frame, digest and compress one block of events (payload i is payloads[start_i : start_i +
    len_i])."""
    from .kernels import frame_records

    n = len(runs)
    size = int(lengths.sum(dtype=np.int64)) + RECORD_HEADER_SIZE * n
    records = np.empty(size, dtype=np.uint8)
    digests = frame_records(runs, events, lengths, payloads, payload_starts, records)
    stored = codec.compress(records)
    header = BlockHeader(codec.codec_id, len(stored), size, n, xxh3_64(stored), xxh3_64(records))
    table = EventTable(
        events.astype(np.uint64, copy=False),
        digests,
        runs.astype(np.uint32, copy=False),
        lengths.astype(np.uint32, copy=False),
        np.zeros(n, dtype=np.uint32),
    )
    return BuiltBlock(header, pack_block_header(header), stored, table)


def read_block(
    source, entry, *, number: int, into=None, against: str = "the index"
) -> tuple[BlockHeader, bytes | memoryview]:
    """Read block ``number`` from ``source`` and fast-check it: (header, stored bytes).

    ``entry`` is what the block must be (its index entry, or a mapping of the same fields,
    ``offset`` included).  The block, header and stored bytes together, is read with one call:
    into the buffer ``into`` when given (``readinto``, no copy, no allocation; the bytes
    returned are a view of it), else into new bytes (``pread``).  A read the source could not
    make is its error (input or output, naming the file) placed at the block; then a short
    read is a ``TruncatedFile``, the header is parsed (``parse_block_header``) and compared
    with ``entry`` (which is called ``against`` in the message), and the stored bytes' digest is
    checked (``check_stored_block``).  Nothing is decompressed."""
    offset = int(entry["offset"])
    size = BLOCK_HEADER_SIZE + int(entry["compressed_length"])
    region = f"block {number}"
    try:
        if into is None:
            raw: bytes | memoryview = source.pread(size, offset)
        else:
            raw = memoryview(into)[:size]
            raw = raw[: source.readinto(raw, offset)]
    except EngineError as exc:
        raise exc.located(region, offset) from None
    if len(raw) != size:
        raise TruncatedFile("file ends inside the block", region=region, offset=offset)
    header = parse_block_header(raw, region=region, offset=offset)
    check_stored_block(
        header,
        entry,
        memoryview(raw)[BLOCK_HEADER_SIZE:],
        region=region,
        offset=offset,
        against=against,
    )
    return header, raw


def check_stored_block(
    header: BlockHeader, entry, data, *, region: str, offset: int, against: str = "the index"
) -> None:
    """Fast check of one stored block against its index entry (``against`` names where the
    entry comes from, for the message); no decompression."""
    if (
        header.codec != entry["codec"]
        or header.compressed_length != entry["compressed_length"]
        or header.uncompressed_length != entry["uncompressed_length"]
        or header.event_count != entry["event_count"]
        or header.compressed_digest != entry["compressed_digest"]
        or header.uncompressed_digest != entry["uncompressed_digest"]
    ):
        raise LayoutError(f"block header disagrees with {against}", region=region, offset=offset)
    if len(data) != header.compressed_length:
        raise TruncatedFile(
            f"block bytes cut short ({len(data)} of {header.compressed_length})",
            region=region,
            offset=offset + BLOCK_HEADER_SIZE,
        )
    computed = xxh3_64(data)
    if computed != header.compressed_digest:
        raise ChecksumMismatch(
            "block data digest differs",
            region=region,
            offset=offset + BLOCK_HEADER_SIZE,
            expected=digest_hex(header.compressed_digest),
            actual=digest_hex(computed),
        )


def decode_block(
    header: BlockHeader,
    data,
    *,
    region: str,
    offset: int,
    out=None,
    expected: EventTable | None = None,
) -> DecodedBlock:
    """Decompress a (digest-checked) block, check its uncompressed digest, walk its records.

    Every caller that decodes a block comes here (the merge's read-back, ``verify --deep``,
    ``iter_events``, the ``--skip-bad`` look-ahead), so all of them accept exactly the same
    blocks: a merge never publishes an output that ``verify --deep`` would refuse.  With
    ``expected`` (the index entries of the block's events), the decoded events must also equal
    them (``compare_events``).

    With ``out`` (a reusable buffer at least the uncompressed length) nothing is allocated for the
    records, which then live in ``out`` until it is reused.
    """
    from .walker import WALK_MESSAGES, WALK_OK, walk_records

    data_offset = offset + BLOCK_HEADER_SIZE
    codec = codec_for_id(header.codec)
    try:
        if out is not None:
            records = memoryview(out)[: header.uncompressed_length]
            codec.decompress_into(data, records)
        else:
            records = memoryview(codec.decompress(data, header.uncompressed_length))
    except IntegrityError as exc:
        raise exc.located(region, data_offset) from None
    computed = xxh3_64(records)
    if computed != header.uncompressed_digest:
        raise ChecksumMismatch(
            "decompressed block digest differs",
            region=region,
            offset=data_offset,
            expected=digest_hex(header.uncompressed_digest),
            actual=digest_hex(computed),
        )
    buf = np.frombuffer(records, dtype=np.uint8)
    status, where, runs, events, offsets, lengths, digests = walk_records(buf, header.event_count)
    if status != WALK_OK:
        raise FramingError(
            f"{WALK_MESSAGES[status]} (at record byte {where})", region=region, offset=data_offset
        )
    table = EventTable(events, digests, runs, lengths, np.zeros(len(runs), dtype=np.uint32))
    if expected is not None:
        compare_events(table, expected, region=region, offset=offset)
    return DecodedBlock(records, table, offsets)


def compare_events(decoded: EventTable, indexed: EventTable, *, region: str, offset: int) -> None:
    """The events decoded from a block must be exactly those the index lists for it."""
    for name in ("run", "event", "length", "digest"):
        a, b = getattr(decoded, name), getattr(indexed, name)
        if not np.array_equal(a, b):
            i = int(np.argmin(a == b)) if len(a) == len(b) else min(len(a), len(b))
            what = "payload digest" if name == "digest" else name
            exp = b[i] if i < len(b) else None
            act = a[i] if i < len(a) else None
            if name == "digest":
                exp = digest_hex(int(exp)) if exp is not None else None
                act = digest_hex(int(act)) if act is not None else None
            mismatch = ChecksumMismatch if name == "digest" else IndexMismatch
            raise mismatch(
                f"event {i} of the block: {what} differs from the index",
                region=region,
                offset=offset,
                expected=None if exp is None else str(exp),
                actual=None if act is None else str(act),
            )
