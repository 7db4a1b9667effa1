"""Take a TMB file apart and put it back together with every digest recomputed.

``dissect(path)`` returns ``Parts``: the header's UUID, the metadata's raw bytes, each block's
stored bytes and header fields, and the index's event table as writable numpy columns.
``assemble(parts)`` packs them into a complete file with ``engine.format``'s own ``pack_*``
functions: block headers carry the xxh3 of whatever stored bytes they now hold, the block table
tiles the new layout, and the index, trailer and header digests are fresh.  What a mutation
changed is therefore only ever caught by the check that looks at that field's meaning, which
is what a hostile (rather than a damaged) file looks like.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field

import numpy as np

from engine.checksums import xxh3_64
from engine.codecs import codec_for_id
from engine.format import (
    HEADER_SIZE,
    BlockHeader,
    EventTable,
    Trailer,
    block_table,
    pack_block_header,
    pack_header,
    pack_index,
    pack_trailer,
)
from engine.readers.tmb import TmbReader


@dataclass
class Block:
    codec: int
    stored: bytes
    uncompressed_length: int
    event_count: int
    uncompressed_digest: int
    records: bytes | None = None  # the decoded record bytes, when known

    @classmethod
    def from_records(cls, records: bytes, codec_id: int, event_count: int) -> Block:
        """An honest block holding ``records``, stored with ``codec_id``."""
        stored = codec_for_id(codec_id).compress(records)
        return cls(
            codec_id, bytes(stored), len(records), event_count, xxh3_64(records), bytes(records)
        )


@dataclass
class Parts:
    uuid: uuidlib.UUID
    metadata: bytes
    blocks: list[Block]
    events: EventTable
    header_patch: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes, header resealed

    def copy(self) -> Parts:
        blocks = [Block(**vars(b)) for b in self.blocks]
        events = EventTable(*(np.array(c, copy=True) for c in self.events.columns()))
        return Parts(self.uuid, self.metadata, blocks, events, dict(self.header_patch))


def dissect(path) -> Parts:
    with TmbReader(path) as reader:
        metadata = bytes(reader.head_bytes[HEADER_SIZE:])
        blocks = []
        for raw in reader.iter_blocks():
            h = raw.header
            records = bytes(
                codec_for_id(h.codec).decompress(bytes(raw.data), h.uncompressed_length)
            )
            blocks.append(
                Block(
                    h.codec,
                    bytes(raw.data),
                    h.uncompressed_length,
                    h.event_count,
                    h.uncompressed_digest,
                    records,
                )
            )
        events = EventTable(*(np.array(c, copy=True) for c in reader.events.columns()))
        return Parts(reader.uuid, metadata, blocks, events)


def assemble(parts: Parts) -> bytes:
    """The file's bytes, every digest and offset consistent with the parts as they are."""
    head = bytearray(pack_header(parts.uuid, parts.metadata))
    if parts.header_patch:
        for offset, value in parts.header_patch.items():
            head[offset : offset + len(value)] = value
        head[56:64] = struct.pack("<Q", xxh3_64(bytes(head[:56])))
    out = [bytes(head), parts.metadata]
    offset = len(head) + len(parts.metadata)
    entries = []
    first = 0
    for b in parts.blocks:
        header = BlockHeader(
            b.codec,
            len(b.stored),
            b.uncompressed_length,
            b.event_count,
            xxh3_64(b.stored),
            b.uncompressed_digest,
        )
        out += [pack_block_header(header), b.stored]
        entries.append((offset, first, header))
        offset += len(out[-2]) + len(b.stored)
        first += b.event_count
    blocks = block_table(entries)
    index = pack_index(blocks, parts.events)
    out += [
        index,
        pack_trailer(Trailer(offset, len(index), xxh3_64(index), len(parts.events), len(blocks))),
    ]
    return b"".join(out)
