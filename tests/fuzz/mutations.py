"""The fuzzer's mutations: each damages one structure of a dissected file (or its sidecar) and
leaves the rest consistent, so ``forge.assemble`` gives a file whose every digest is valid.

A mutation is ``fn(case, rng) -> None`` on a ``Case`` (the file's ``Parts``, its sidecar as a
dict or raw bytes, and raw byte edits to apply after assembly).  They are grouped by what they
aim at: zstd frames, record bytes, block header fields, the index's event table, the block
order, the embedded metadata, the header, the sidecar, and plain byte damage (digests not
recomputed) as a control.  ``mutate(case, rng)`` applies one to three of them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from engine.checksums import adler32, format_adler32, xxh3_64
from engine.format import CODEC_NONE, CODEC_ZSTD, MAX_BLOCK_BYTES, RECORD_HEADER_SIZE

from .forge import Block, Parts

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE = b"\x50\x2a\x4d\x18"


@dataclass
class Case:
    parts: Parts
    sidecar: Any  # dict, raw bytes, or None (no sidecar)
    byte_edits: list[tuple[int, int]] = field(default_factory=list)  # (offset, xor) after assembly
    truncate_to: int | None = None
    applied: list[str] = field(default_factory=list)
    sidecar_set: set[str] = field(
        default_factory=set
    )  # sidecar fields a mutation chose the value of


def pick(rng, values):
    """One of ``values`` (Python ints of any size: numpy's choice would overflow on 2**64-1)."""
    return values[int(rng.integers(len(values)))]


def _block(case: Case, rng) -> Block:
    return case.parts.blocks[int(rng.integers(len(case.parts.blocks)))]


def _records(block: Block) -> bytes:
    return block.records if block.records is not None else b""


def _restore(
    block: Block, records: bytes, *, codec: int | None = None, honest_length: bool = True
) -> None:
    """Store ``records`` in ``block`` (compressed with its codec) with a matching digest."""
    codec = block.codec if codec is None else codec
    block.codec = codec
    block.stored = (
        zstandard.ZstdCompressor(level=1).compress(records)
        if codec == CODEC_ZSTD
        else bytes(records)
    )
    block.records = bytes(records)
    block.uncompressed_digest = xxh3_64(records)
    if honest_length:
        block.uncompressed_length = len(records)


# --- zstd frames ----------------------------------------------------------------------------


def _frame(
    content_size: int | None, blocks: list[tuple[int, int, bytes]], *, checksum: bool = False
) -> bytes:
    """A hand-made zstd frame: (type, size, body) blocks; type 0 raw, 1 RLE, 2 compressed."""
    if content_size is None:
        head = ZSTD_MAGIC + bytes(
            [0x00 | (4 if checksum else 0), 0x58]
        )  # window descriptor, no FCS
    else:
        head = ZSTD_MAGIC + bytes([0xE0 | (4 if checksum else 0)]) + struct.pack("<Q", content_size)
    out = [head]
    for i, (kind, size, body) in enumerate(blocks):
        word = (i == len(blocks) - 1) | (kind << 1) | (size << 3)
        out.append(struct.pack("<I", word)[:3] + body)
    if checksum:
        out.append(b"\0\0\0\0")
    return b"".join(out)


def zstd_declares_other_size(case, rng):
    b = _block(case, rng)
    size = pick(
        rng,
        [
            0,
            1,
            b.uncompressed_length - 1,
            b.uncompressed_length + 1,
            1 << 31,
            1 << 40,
            (1 << 64) - 3,
        ],
    )
    size = max(size, 0)  # a block of no bytes has no "one less" to declare
    count = int(rng.integers(1, 40))
    b.codec = CODEC_ZSTD
    b.stored = _frame(size, [(1, 1 << 17, b"\x00")] * count)


def zstd_rle_bomb_honest_size(case, rng):
    """A frame whose declared size equals the header's, but whose blocks produce more (or less)."""
    b = _block(case, rng)
    n = max(1, b.uncompressed_length // (1 << 17) + int(rng.integers(-1, 3)))
    b.codec = CODEC_ZSTD
    b.stored = _frame(b.uncompressed_length, [(1, 1 << 17, b"\x41")] * n)


def zstd_without_content_size(case, rng):
    b = _block(case, rng)
    b.codec = CODEC_ZSTD
    b.stored = zstandard.ZstdCompressor(write_content_size=False).compress(_records(b))


def zstd_trailing_bytes(case, rng):
    b = _block(case, rng)
    if b.codec != CODEC_ZSTD:
        _restore(b, _records(b), codec=CODEC_ZSTD)
    tail = [
        b"\x00",
        b"junk",
        zstandard.ZstdCompressor().compress(b"x"),
        SKIPPABLE + struct.pack("<I", 3) + b"abc",
        ZSTD_MAGIC,
    ][int(rng.integers(5))]
    b.stored = b.stored + tail if rng.random() < 0.8 else tail + b.stored


def zstd_byte_flip(case, rng):
    b = _block(case, rng)
    if b.codec != CODEC_ZSTD or not b.stored:
        return
    stored = bytearray(b.stored)
    for _ in range(int(rng.integers(1, 4))):
        stored[int(rng.integers(len(stored)))] ^= int(rng.integers(1, 256))
    b.stored = bytes(stored)


def zstd_bad_block_headers(case, rng):
    b = _block(case, rng)
    kind = pick(rng, [3, 0, 2])
    size = pick(rng, [0, 1, (1 << 17) + 1, (1 << 21) - 1])
    b.codec = CODEC_ZSTD
    b.stored = _frame(
        b.uncompressed_length, [(kind, size, b"\x00" * min(size, 64))], checksum=rng.random() < 0.3
    )


def zstd_cut(case, rng):
    b = _block(case, rng)
    if b.codec == CODEC_ZSTD and len(b.stored) > 1:
        b.stored = b.stored[: int(rng.integers(len(b.stored)))]


# --- records (recompressed honestly: only the framing or the events lie) --------------------


def records_byte_flip(case, rng):
    b = _block(case, rng)
    records = bytearray(_records(b))
    if records:
        records[int(rng.integers(len(records)))] ^= int(rng.integers(1, 256))
        _restore(b, bytes(records))


def records_length_field(case, rng):
    b = _block(case, rng)
    records = bytearray(_records(b))
    if len(records) >= RECORD_HEADER_SIZE:
        value = pick(rng, [0, 1, len(records), 0xFFFFFFFF, 0x7FFFFFFF])
        records[12:16] = struct.pack("<I", value)
        _restore(b, bytes(records))


def records_resized(case, rng):
    b = _block(case, rng)
    records = _records(b)
    cut = int(rng.integers(0, max(1, len(records))))
    records = records[:cut] if rng.random() < 0.5 else records + bytes(int(rng.integers(1, 64)))
    _restore(b, records, honest_length=rng.random() < 0.5)


def records_codec_switch(case, rng):
    b = _block(case, rng)
    _restore(b, _records(b), codec=CODEC_NONE if b.codec == CODEC_ZSTD else CODEC_ZSTD)


# --- block header fields ---------------------------------------------------------------------


def header_uncompressed_length(case, rng):
    b = _block(case, rng)
    b.uncompressed_length = pick(
        rng,
        [
            0,
            1,
            b.uncompressed_length - 1,
            b.uncompressed_length + 1,
            MAX_BLOCK_BYTES,
            MAX_BLOCK_BYTES + 1,
            0xFFFFFFFF,
        ],
    ) % (1 << 32)  # a u32 field: 0 - 1 and 0xFFFFFFFF + 1 wrap around as on disk


def header_event_count(case, rng):
    b = _block(case, rng)
    b.event_count = pick(rng, [0, 1, b.event_count - 1, b.event_count + 1, 0xFFFFFFFF]) % (1 << 32)


def header_uncompressed_digest(case, rng):
    _block(case, rng).uncompressed_digest ^= 1 << int(rng.integers(64))


def header_codec(case, rng):
    _block(case, rng).codec = pick(rng, [CODEC_NONE, CODEC_ZSTD, 2, 255])


# --- the index's event table ----------------------------------------------------------------


def events_field(case, rng):
    events = case.parts.events
    if not len(events):
        return
    i = int(rng.integers(len(events)))
    name = ["event", "digest", "run", "length", "block"][int(rng.integers(5))]
    column = getattr(events, name)
    choices = {
        "event": [0, int(column[i]) + 1, 2**64 - 1],
        "digest": [int(column[i]) ^ 1, 0],
        "run": [0, int(column[i]) + 1, 2**32 - 1],
        "length": [0, int(column[i]) + 1, 2**32 - 1],
        "block": [int(column[i]) + 1, 2**32 - 1],
    }[name]
    column[i] = pick(rng, choices) % (int(np.iinfo(column.dtype).max) + 1)  # +1 may wrap around


def events_duplicate(case, rng):
    events = case.parts.events
    if len(events) > 1:
        i = int(rng.integers(1, len(events)))
        events.event[i] = events.event[i - 1]
        events.run[i] = events.run[i - 1]


def events_and_records_agree_on_a_lie(case, rng):
    """Change one record's event number in the block and in the index: every digest agrees."""
    parts = case.parts
    bi = int(rng.integers(len(parts.blocks)))
    b = parts.blocks[bi]
    first = sum(x.event_count for x in parts.blocks[:bi])
    records = bytearray(_records(b))
    if len(records) < RECORD_HEADER_SIZE or first >= len(parts.events):
        return
    value = pick(rng, [0, 999, 2**63])
    records[4:12] = struct.pack("<Q", value)
    parts.events.event[first] = value
    _restore(b, bytes(records))


# --- blocks as a whole ----------------------------------------------------------------------


def blocks_reordered(case, rng):
    blocks = case.parts.blocks
    if len(blocks) > 1:
        i, j = rng.choice(len(blocks), 2, replace=False)
        blocks[i], blocks[j] = blocks[j], blocks[i]


def blocks_dropped_or_doubled(case, rng):
    blocks = case.parts.blocks
    i = int(rng.integers(len(blocks)))
    if rng.random() < 0.5 and len(blocks) > 1:
        del blocks[i]
    else:
        blocks.insert(i, Block(**vars(blocks[i])))


# --- embedded metadata and header -----------------------------------------------------------

HOSTILE_JSON = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 100 + b"1" + b"}" * 100,
    b'{"file_name":"x","n":' + b"7" * 5000 + b"}",
    b'{"file_name":"\\ud800"}',
    b'{"n":NaN}',
    b'{"n":1e999}',
    b'{"n":-Infinity}',
    b"\xff\xfe{}",
    b"[]",
    b"null",
    b"",
    b"{",
    b'"str"',
    b'{"partition":' + str(10**30).encode() + b"}",
    b'{"partition":-1}',
    b'{"partition":"3"}',
    b'{"file_name":' + json.dumps("x" * 100000).encode() + b"}",
]


def metadata_hostile_json(case, rng):
    case.parts.metadata = HOSTILE_JSON[int(rng.integers(len(HOSTILE_JSON)))]


def metadata_field(case, rng):
    try:
        md = json.loads(case.parts.metadata)
    except ValueError:
        return
    if not isinstance(md, dict):
        return
    key = ["file_name", "partition", "created", "format_version", "merge"][int(rng.integers(5))]
    md[key] = [None, 0, -1, 10**12, "x" * 300, "../x", [], {"inputs": [1, 2]}, "\u00e9"][
        int(rng.integers(9))
    ]
    case.parts.metadata = json.dumps(md).encode()


def metadata_byte_flip(case, rng):
    meta = bytearray(case.parts.metadata)
    if meta:
        meta[int(rng.integers(len(meta)))] ^= int(rng.integers(1, 256))
        case.parts.metadata = bytes(meta)


def header_fields(case, rng):
    offset, value = [
        (0, b"\x89TMC"),
        (2, b"X"),
        (8, struct.pack("<H", 2)),
        (10, struct.pack("<H", 65)),
        (12, struct.pack("<I", 1)),
        (36, struct.pack("<I", 1)),
        (48, struct.pack("<Q", 1)),
        (32, struct.pack("<I", 0xFFFFFFFF)),
    ][int(rng.integers(8))]
    case.parts.header_patch[offset] = value


# --- sidecar ----------------------------------------------------------------------------------


def sidecar_hostile_json(case, rng):
    case.sidecar = HOSTILE_JSON[int(rng.integers(len(HOSTILE_JSON)))]


def sidecar_field(case, rng):
    if not isinstance(case.sidecar, dict):
        return
    md = dict(case.sidecar)
    key = [
        "runs",
        "first_event",
        "last_event",
        "event_count",
        "file_size",
        "checksum",
        "file_name",
        "event_cout",
        "parents",
        "data_tier",
        "start_time",
        "application",
        "Merge.x",
    ][int(rng.integers(13))]
    md[key] = [
        [[999, 0, "physics"]],
        0,
        -5,
        2**63,
        2**64,
        "adler32:00000000",
        "enstore:5",
        "x" * 400,
        ["a", "a"],
        {"family": 1},
        None,
        "2005-13-45",
        [[1, 2]],
        True,
        1.5,
    ][int(rng.integers(15))]
    case.sidecar = md
    case.sidecar_set.add(key)


def sidecar_dropped(case, rng):
    case.sidecar = None


# --- plain damage (digests not recomputed): the control ---------------------------------------


def raw_byte_flips(case, rng):
    for _ in range(int(rng.integers(1, 4))):
        case.byte_edits.append((int(rng.integers(1 << 30)), int(rng.integers(1, 256))))


def raw_truncation(case, rng):
    case.truncate_to = int(rng.integers(1 << 30))


MUTATIONS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        zstd_declares_other_size,
        zstd_rle_bomb_honest_size,
        zstd_without_content_size,
        zstd_trailing_bytes,
        zstd_byte_flip,
        zstd_bad_block_headers,
        zstd_cut,
        records_byte_flip,
        records_length_field,
        records_resized,
        records_codec_switch,
        header_uncompressed_length,
        header_event_count,
        header_uncompressed_digest,
        header_codec,
        events_field,
        events_duplicate,
        events_and_records_agree_on_a_lie,
        blocks_reordered,
        blocks_dropped_or_doubled,
        metadata_hostile_json,
        metadata_field,
        metadata_byte_flip,
        header_fields,
        sidecar_hostile_json,
        sidecar_field,
        sidecar_dropped,
        raw_byte_flips,
        raw_truncation,
    )
}


def mutate(case: Case, rng: np.random.Generator) -> Case:
    names = list(MUTATIONS)
    for _ in range(int(rng.integers(1, 4))):
        name = names[int(rng.integers(len(names)))]
        MUTATIONS[name](case, rng)
        case.applied.append(name)
    return case


def render(case: Case) -> tuple[bytes, bytes | None]:
    """The file's bytes and the sidecar's (None: no sidecar)."""
    from .forge import assemble

    data = bytearray(assemble(case.parts))
    for offset, xor in case.byte_edits:
        if data:
            data[offset % len(data)] ^= xor
    if case.truncate_to is not None and data:
        del data[case.truncate_to % len(data) :]
    if case.sidecar is None:
        sidecar = None
    elif isinstance(case.sidecar, bytes):
        sidecar = case.sidecar
    else:  # the size and adler32 follow the file (like its digests), unless a mutation set them
        md = dict(case.sidecar)
        if "file_size" not in case.sidecar_set:
            md["file_size"] = len(data)
        if "checksum" not in case.sidecar_set:
            md["checksum"] = [format_adler32(adler32(bytes(data)))]
        sidecar = json.dumps(md, ensure_ascii=True).encode()
    return bytes(data), sidecar
