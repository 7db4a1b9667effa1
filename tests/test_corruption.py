"""Damaged files: every flipped byte, every truncation, hostile lengths and broken framing are
caught.

Two small files (3 blocks each; one zstd, one ``none``) are written once.  Then:

- every byte of each file is flipped (XOR 0x01 and XOR 0xFF, one byte at a time) and the fast
  verify (digests only, no decompression) must fail naming the region that holds the byte; a
  sample of flips is also verified deep;
- every truncation (lengths 0 .. size-1) must fail as an integrity error;
- header, trailer, index and block length fields are set to huge or inconsistent values with the
  digests recomputed (so only the bounds checks stand in the way): a clean ``IntegrityError`` or
  ``FormatError``, fast and deep, never a ``MemoryError`` or a hang;
- event records that do not parse, in a block whose digests were all recomputed: deep verify
  raises ``FramingError`` naming the block.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from engine.checksums import xxh3_64
from engine.errors import (
    ChecksumMismatch,
    DecompressionError,
    FormatError,
    FramingError,
    IndexMismatch,
    IntegrityError,
    LayoutError,
    MetadataError,
    TruncatedFile,
)
from engine.format import (
    BLOCK_DTYPE,
    BLOCK_HEADER_SIZE,
    EVENT_COLUMNS,
    HEADER_SIZE,
    INDEX_HEADER_SIZE,
    MAX_BLOCK_BYTES,
    MAX_METADATA_BYTES,
    RECORD_HEADER_SIZE,
    TRAILER_SIZE,
    region_at,
)
from engine.readers import open_file
from engine.verify import verify_file
from engine.writer import TmbWriter

MAGIC_BYTES = 8
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


class Layout(NamedTuple):
    """Where each region of a sound file sits, as read back by the reader."""

    size: int
    metadata_length: int
    block_offsets: list[int]
    block_events: list[tuple[int, int]]  # (first event index, count) per block
    lengths: list[int]  # payload length per event
    index_offset: int
    blocks: np.ndarray

    def region(self, offset: int) -> str:
        if offset < HEADER_SIZE:
            return "header"
        if offset < HEADER_SIZE + self.metadata_length:
            return "metadata"
        if offset >= self.size - TRAILER_SIZE:
            return "trailer"
        if offset >= self.index_offset:
            return "index"
        n = max(i for i, start in enumerate(self.block_offsets) if start <= offset)
        return f"block {n}"

    def entry_offset(self, block: int) -> int:
        """File offset of a block's entry in the index's block table."""
        return self.index_offset + INDEX_HEADER_SIZE + block * BLOCK_DTYPE.itemsize

    def column_offset(self, name: str) -> int:
        """File offset of an event column in the index."""
        pos = self.index_offset + INDEX_HEADER_SIZE + len(self.block_offsets) * BLOCK_DTYPE.itemsize
        for column, dtype in EVENT_COLUMNS:
            if column == name:
                return pos
            pos += np.dtype(dtype).itemsize * len(self.lengths)
        raise KeyError(name)


def write_sample(path: Path, codec: str) -> Layout:
    payloads = [bytes([i % 7]) * (5 + 6 * i) for i in range(9)]
    with TmbWriter(
        path, codec=codec, block_bytes=200, fsync=False, metadata={"created": "2004-01-01"}
    ) as w:
        for i, payload in enumerate(payloads):
            w.write_event(176852, 1000 + i, payload)
    with open_file(path) as r:
        blocks = np.array(r.blocks)
        return Layout(
            r.file_size,
            r.header.metadata_length,
            blocks["offset"].tolist(),
            list(zip(blocks["first_event"].tolist(), blocks["event_count"].tolist(), strict=True)),
            r.events.length.tolist(),
            r.index_offset,
            blocks,
        )


@pytest.fixture(scope="module", params=["zstd", "none"])
def sample(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"sample-{request.param}")
    path = folder / "sound.tmb"
    layout = write_sample(path, request.param)
    assert len(layout.block_offsets) == 3, "the sample must have 3 blocks"
    assert verify_file(path, deep=True, metadata="none").ok
    return request.param, path.read_bytes(), layout, folder


def verify_failure(path: Path, *, deep: bool = False):
    """The error verify reports for ``path``; failing the test if there is none."""
    report = verify_file(path, deep=deep, metadata="none")
    assert not report.ok, "damage went unnoticed"
    return report.error


def check_failure(path: Path, data: bytes, *, deep: bool = False):
    path.write_bytes(data)
    return verify_failure(path, deep=deep)


def test_layout_regions_agree_with_format_region_at(sample):
    layout = sample[2]
    for offset in range(layout.size):
        assert layout.region(offset) == region_at(
            offset,
            metadata_length=layout.metadata_length,
            blocks=layout.blocks,
            index_offset=layout.index_offset,
            file_size=layout.size,
        )


def test_every_flipped_byte_is_caught_naming_its_region(sample):
    codec, data, layout, folder = sample
    path = folder / "flipped.tmb"
    path.write_bytes(data)
    seen_regions = set()
    fd = os.open(path, os.O_RDWR)
    try:
        # Damage in place (no rewrite of the whole file per flip: keeps a few thousand checks fast).
        for offset in range(len(data)):
            expected_region = layout.region(offset)
            seen_regions.add(expected_region.split()[0])
            for mask in (0x01, 0xFF):
                os.pwrite(fd, bytes([data[offset] ^ mask]), offset)
                error = verify_failure(path)
                where = f"byte {offset} ^ {mask:#04x} ({codec})"
                assert error.region == expected_region, f"{where}: {error!r}"
                assert str(path) in str(error) and expected_region in str(error), where
                # the magic included: the header's digest proves a TMB header, so damage is
                # integrity
                assert isinstance(error, IntegrityError) and error.exit_code == 5, (
                    f"{where}: {error!r}"
                )
            os.pwrite(fd, data[offset : offset + 1], offset)
    finally:
        os.close(fd)
    assert seen_regions == {"header", "metadata", "block", "index", "trailer"}


def test_payload_flips_are_caught_by_the_stored_bytes_digest(sample):
    """A flipped payload byte fails the fast check before anything is decompressed."""
    _, data, layout, folder = sample
    path = folder / "payload.tmb"
    for block, start in enumerate(layout.block_offsets):
        offset = start + BLOCK_HEADER_SIZE + 3
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        error = check_failure(path, bytes(damaged))
        assert isinstance(error, ChecksumMismatch)
        assert error.region == f"block {block}"
        assert error.offset == start + BLOCK_HEADER_SIZE
        assert "block data digest differs" in str(error)


def test_deep_verify_catches_a_sample_of_flips(sample):
    codec, data, layout, folder = sample
    path = folder / "deep.tmb"
    for offset in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        error = check_failure(path, bytes(damaged), deep=True)
        assert error.region == layout.region(offset), f"byte {offset} ({codec}): {error!r}"


def test_every_truncation_is_caught(sample):
    _, data, layout, folder = sample
    path = folder / "short.tmb"
    path.write_bytes(data)
    for length in reversed(range(len(data))):
        os.truncate(path, length)
        error = verify_failure(path)
        assert isinstance(error, IntegrityError), f"cut at {length}: {error!r}"
        assert error.exit_code == 5
        assert str(path) in str(error)
        if length >= HEADER_SIZE + layout.metadata_length + TRAILER_SIZE:
            # O(1): the last 64 bytes are not a valid trailer; nothing else is read.
            assert isinstance(error, TruncatedFile) and error.region == "trailer", (
                f"cut at {length}: {error!r}"
            )
    assert path.stat().st_size == 0 and isinstance(error, TruncatedFile)


def test_trailing_garbage_is_caught(sample):
    _, data, _, folder = sample
    path = folder / "longer.tmb"
    for extra in (b"\x00", b"x" * 63, data[-TRAILER_SIZE:]):
        error = check_failure(path, data + extra)
        assert isinstance(error, IntegrityError)


# ---------------------------------------------------------------------------------------------
# Crafted files: fields changed and every digest recomputed, so only bounds and layout checks
# stand between the bytes and an allocation.


def put(buf: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into("<" + fmt, buf, offset, value)


def reseal_header(buf: bytearray) -> None:
    put(buf, 56, "Q", xxh3_64(bytes(buf[:56])))


def reseal_block_header(buf: bytearray, offset: int) -> None:
    put(buf, offset + 40, "Q", xxh3_64(bytes(buf[offset : offset + 40])))


def reseal_tail(buf: bytearray, layout: Layout) -> None:
    """Recompute the index digest (stored in the trailer) and the trailer's own digest."""
    trailer = len(buf) - TRAILER_SIZE
    put(buf, trailer + 24, "Q", xxh3_64(bytes(buf[layout.index_offset : trailer])))
    put(buf, trailer + 48, "Q", xxh3_64(bytes(buf[trailer : trailer + 48])))


def reseal_block_data(buf: bytearray, layout: Layout, block: int) -> None:
    """After editing a ``none`` block's bytes: new digests in its header and index entry,
    resealed."""
    start = layout.block_offsets[block]
    length = int(layout.blocks["compressed_length"][block])
    digest = xxh3_64(bytes(buf[start + BLOCK_HEADER_SIZE : start + BLOCK_HEADER_SIZE + length]))
    put(buf, start + 24, "Q", digest)
    put(buf, start + 32, "Q", digest)
    reseal_block_header(buf, start)
    put(buf, layout.entry_offset(block) + 32, "Q", digest)
    put(buf, layout.entry_offset(block) + 40, "Q", digest)
    reseal_tail(buf, layout)


def hostile_header(field_offset, value, fmt="I"):
    def craft(buf, layout):
        put(buf, field_offset, fmt, value)
        reseal_header(buf)

    return craft


def hostile_trailer(field_offset, value):
    def craft(buf, layout):
        trailer = len(buf) - TRAILER_SIZE
        put(buf, trailer + field_offset, "Q", value)
        put(buf, trailer + 48, "Q", xxh3_64(bytes(buf[trailer : trailer + 48])))

    return craft


def hostile_index(where, fmt, value):
    def craft(buf, layout):
        put(buf, where(layout), fmt, value)
        reseal_tail(buf, layout)

    return craft


def hostile_block_header(field_offset, value):
    def craft(buf, layout):
        start = layout.block_offsets[0]
        put(buf, start + field_offset, "I", value)
        reseal_block_header(buf, start)

    return craft


def longer_metadata(buf, layout):
    """Metadata length covering 100 bytes of block 0, with the metadata digest made to match."""
    new_length = layout.metadata_length + 100
    put(buf, 32, "I", new_length)
    put(buf, 40, "Q", xxh3_64(bytes(buf[HEADER_SIZE : HEADER_SIZE + new_length])))
    reseal_header(buf)


HOSTILE = [
    # (name, craft, error class, region)
    ("metadata length u32 max", hostile_header(32, U32_MAX), LayoutError, "header"),
    ("metadata length at the bound", hostile_header(32, MAX_METADATA_BYTES), LayoutError, "header"),
    ("metadata length past its JSON", longer_metadata, MetadataError, "metadata"),
    ("trailer index offset u64 max", hostile_trailer(8, U64_MAX), LayoutError, "trailer"),
    ("trailer index length 2**63", hostile_trailer(16, 2**63), LayoutError, "trailer"),
    ("trailer event count u64 max", hostile_trailer(32, U64_MAX), LayoutError, "trailer"),
    ("trailer block count 2**40", hostile_trailer(40, 2**40), LayoutError, "trailer"),
    (
        "index block count u64 max",
        hostile_index(lambda layout: layout.index_offset + 8, "Q", U64_MAX),
        LayoutError,
        "index",
    ),
    (
        "index event count 2**40",
        hostile_index(lambda layout: layout.index_offset + 16, "Q", 2**40),
        LayoutError,
        "index",
    ),
    (
        "index entry stored length",
        hostile_index(lambda layout: layout.entry_offset(0) + 8, "I", U32_MAX),
        LayoutError,
        "index",
    ),
    (
        "index entry uncompressed length",
        hostile_index(lambda layout: layout.entry_offset(0) + 12, "I", U32_MAX),
        LayoutError,
        "index",
    ),
    (
        "index entry event count",
        hostile_index(lambda layout: layout.entry_offset(0) + 16, "I", U32_MAX),
        LayoutError,
        "index",
    ),
    (
        "index entry first event",
        hostile_index(lambda layout: layout.entry_offset(1) + 24, "Q", U64_MAX),
        LayoutError,
        "index",
    ),
    (
        "index event length",
        hostile_index(lambda layout: layout.column_offset("length"), "I", U32_MAX),
        LayoutError,
        "index",
    ),
    (
        "index event block number",
        hostile_index(lambda layout: layout.column_offset("block"), "I", U32_MAX),
        LayoutError,
        "index",
    ),
    ("block header stored length", hostile_block_header(8, U32_MAX), LayoutError, "block 0"),
    ("block header uncompressed length", hostile_block_header(12, U32_MAX), LayoutError, "block 0"),
    ("block header event count", hostile_block_header(16, U32_MAX), LayoutError, "block 0"),
    ("block header codec id", hostile_block_header(4, 0x77), FormatError, "block 0"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("deep", [False, True], ids=["fast", "deep"])
@pytest.mark.parametrize("name, craft, error_class, region", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_length_fields_fail_cleanly(sample, name, craft, error_class, region, deep):
    _, data, layout, folder = sample
    buf = bytearray(data)
    craft(buf, layout)
    error = check_failure(folder / "hostile.tmb", bytes(buf), deep=deep)
    assert isinstance(error, error_class), f"{name}: {error!r}"
    assert isinstance(error, (IntegrityError, FormatError))
    assert error.region == region, f"{name}: {error!r}"


@pytest.mark.timeout(10)
def test_huge_uncompressed_length_agreed_by_header_and_index_fails_in_decompression(tmp_path):
    """A zstd block claiming MAX_BLOCK_BYTES everywhere (header, index, event lengths all agree).

    The stored bytes are untouched, so only decoding can tell; it must fail cleanly, bounded by
    the claimed length, not by anything larger.
    """
    layout = write_sample(tmp_path / "sound.tmb", "zstd")
    buf = bytearray((tmp_path / "sound.tmb").read_bytes())
    start = layout.block_offsets[0]
    grow = MAX_BLOCK_BYTES - int(layout.blocks["uncompressed_length"][0])
    put(buf, start + 12, "I", MAX_BLOCK_BYTES)
    reseal_block_header(buf, start)
    put(buf, layout.entry_offset(0) + 12, "I", MAX_BLOCK_BYTES)
    put(buf, layout.column_offset("length"), "I", layout.lengths[0] + grow)
    reseal_tail(buf, layout)
    error = check_failure(tmp_path / "huge.tmb", bytes(buf), deep=True)
    assert isinstance(error, (DecompressionError, ChecksumMismatch)), repr(error)
    assert error.region == "block 0"


# ---------------------------------------------------------------------------------------------
# Framing: records that do not parse inside a block whose every digest is right.


def record_offsets(layout: Layout, block: int) -> list[int]:
    """File offsets of the record headers of one ``none`` block."""
    first, count = layout.block_events[block]
    pos = layout.block_offsets[block] + BLOCK_HEADER_SIZE
    offsets = []
    for length in layout.lengths[first : first + count]:
        offsets.append(pos)
        pos += RECORD_HEADER_SIZE + length
    return offsets


@pytest.fixture()
def none_sample(tmp_path):
    path = tmp_path / "sound.tmb"
    layout = write_sample(path, "none")
    return bytearray(path.read_bytes()), layout, tmp_path


@pytest.mark.timeout(10)
@pytest.mark.parametrize("new_length", [U32_MAX, 1 << 20], ids=["u32-max", "1MiB"])
def test_record_length_past_the_block_is_a_framing_error(none_sample, new_length):
    buf, layout, folder = none_sample
    last = record_offsets(layout, 1)[-1]
    put(buf, last + 12, "I", new_length)
    reseal_block_data(buf, layout, 1)
    path = folder / "framing.tmb"
    error = check_failure(path, bytes(buf), deep=True)
    assert isinstance(error, FramingError), repr(error)
    assert error.region == "block 1"
    assert "block 1" in str(error) and str(path) in str(error)
    assert "payload runs past the end of the block" in str(error)


@pytest.mark.timeout(10)
def test_misaligned_records_are_a_framing_error(none_sample):
    buf, layout, folder = none_sample
    first = record_offsets(layout, 2)[0]
    put(buf, first + 12, "I", layout.lengths[layout.block_events[2][0]] + 3)
    reseal_block_data(buf, layout, 2)
    error = check_failure(folder / "misaligned.tmb", bytes(buf), deep=True)
    assert isinstance(error, FramingError), repr(error)
    assert error.region == "block 2"


@pytest.mark.timeout(10)
def test_record_disagreeing_with_the_index_fails_deep(none_sample):
    """A record's run number changed, block digests recomputed: deep verify compares it to the
    index."""
    buf, layout, folder = none_sample
    second = record_offsets(layout, 0)[1]
    put(buf, second, "I", 176853)
    reseal_block_data(buf, layout, 0)
    error = check_failure(folder / "run.tmb", bytes(buf), deep=True)
    assert isinstance(error, IndexMismatch), repr(error)  # a run is not a digest (issue 12)
    assert error.exit_code == 5 and error.region == "block 0"
    assert "run differs from the index" in str(error)
    assert (error.expected, error.actual) == ("176852", "176853")


@pytest.mark.timeout(10)
def test_payload_byte_with_every_block_digest_recomputed_fails_deep(none_sample):
    """Deep decoding does not re-hash the whole decompressed block when it has the index entries:
    the payload digests must catch a changed payload byte on their own, naming the event."""
    buf, layout, folder = none_sample
    first, _ = layout.block_events[1]
    third = record_offsets(layout, 1)[2]
    buf[third + RECORD_HEADER_SIZE + layout.lengths[first + 2] // 2] ^= 0x20
    reseal_block_data(buf, layout, 1)
    error = check_failure(folder / "payload.tmb", bytes(buf), deep=True)
    assert isinstance(error, ChecksumMismatch), repr(error)
    assert error.region == "block 1"
    assert "event 2 of the block: payload digest differs from the index" in str(error)


def test_uncompressed_digest_is_checked_even_when_the_events_prove_the_block(none_sample):
    """A wrong uncompressed digest is refused by every decode, the merge's read-back included
    (which proves the events against the index too): one decode path, one verdict."""
    from engine.blocks import decode_block
    from engine.format import parse_block_header

    buf, layout, _ = none_sample
    start = layout.block_offsets[0]
    end = start + BLOCK_HEADER_SIZE + int(layout.blocks["compressed_length"][0])
    header = parse_block_header(
        bytes(buf[start : start + BLOCK_HEADER_SIZE]), region="block 0", offset=start
    )
    data = bytes(buf[start + BLOCK_HEADER_SIZE : end])
    with open_file(_written(none_sample)) as reader:
        events = reader.events.slice(0, header.event_count)
    wrong = header._replace(uncompressed_digest=header.uncompressed_digest ^ 1)
    assert (
        len(decode_block(header, data, region="block 0", offset=start).events) == header.event_count
    )
    for kwargs in ({}, {"expected": events}, {"expected": events, "out": bytearray(len(data))}):
        with pytest.raises(ChecksumMismatch, match="decompressed block digest differs"):
            decode_block(wrong, data, region="block 0", offset=start, **kwargs)


def test_verify_deep_refuses_a_wrong_uncompressed_digest_field(none_sample):
    """Header and index both carry the wrong digest, every other digest resealed: only the
    decoded-block digest check can refuse it."""
    buf, layout, folder = none_sample
    start = layout.block_offsets[2]
    for where in (start + 32, layout.entry_offset(2) + 40):
        buf[where] ^= 0x01
    reseal_block_header(buf, start)
    reseal_tail(buf, layout)
    path = folder / "digest-field.tmb"
    path.write_bytes(bytes(buf))
    assert verify_file(path, metadata="none").ok  # nothing for the fast check to see
    error = verify_failure(path, deep=True)
    assert isinstance(error, ChecksumMismatch), repr(error)
    assert error.region == "block 2" and "decompressed block digest differs" in str(error)


def _written(none_sample):
    buf, _, folder = none_sample
    path = folder / "sound-copy.tmb"
    path.write_bytes(bytes(buf))
    return path


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "extra_blocks, extra_events", [(7, -12), (-7, 12)], ids=["more-blocks", "fewer-blocks"]
)
def test_trailer_counts_that_fit_the_index_length_but_not_the_index(
    tmp_path, extra_blocks, extra_events
):
    """48 x 7 == 28 x 12: a trailer can claim other counts with the same index length.

    Its digest recomputed, only the comparison with the index's own counts can refuse it (it
    must neither crash nor skip blocks).
    """
    path = tmp_path / "sound.tmb"
    with TmbWriter(path, codec="zstd", block_bytes=40, fsync=False) as writer:
        for i in range(30):
            writer.write_event(5, i, bytes([i]) * 20)  # one event per block
    buf = bytearray(path.read_bytes())
    trailer = len(buf) - TRAILER_SIZE
    assert struct.unpack_from("<QQ", buf, trailer + 32) == (30, 30)
    put(buf, trailer + 32, "Q", 30 + extra_events)
    put(buf, trailer + 40, "Q", 30 + extra_blocks)
    put(buf, trailer + 48, "Q", xxh3_64(bytes(buf[trailer : trailer + 48])))
    for deep in (False, True):
        error = check_failure(tmp_path / "counts.tmb", bytes(buf), deep=deep)
        assert isinstance(error, LayoutError), repr(error)
        assert error.region in ("index", "trailer")
