"""``format.check_index`` in pieces: every chunk boundary against block boundaries, and each
kind of event-table damage found wherever it sits (first, middle, last event of a chunk)."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from engine.errors import LayoutError
from engine.format import (
    BLOCK_DTYPE,
    BLOCK_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    EventTable,
    check_index,
    iter_index_parts,
)

DATA_START = 100


def _index(counts, lengths):
    """A block table and event table that agree: blocks of ``counts`` events tiling the file."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    blocks = np.zeros(len(counts), dtype=BLOCK_DTYPE)
    blocks["event_count"] = counts
    blocks["first_event"] = np.concatenate([[0], np.cumsum(counts)[:-1]])
    block_of = np.repeat(np.arange(len(counts)), counts)
    blocks["uncompressed_length"] = np.bincount(block_of, weights=lengths, minlength=len(counts))
    blocks["uncompressed_length"] += RECORD_HEADER_SIZE * counts.astype(np.uint32)
    blocks["compressed_length"] = 10
    blocks["offset"] = DATA_START + np.arange(len(counts)) * (BLOCK_HEADER_SIZE + 10)
    events = EventTable(
        np.arange(n, dtype=np.uint64),
        np.zeros(n, dtype=np.uint64),
        np.full(n, 7, dtype=np.uint32),
        np.asarray(lengths, dtype=np.uint32),
        block_of.astype(np.uint32),
    )
    return blocks, events


def _check(blocks, events, chunk_events):
    raw = b"".join(bytes(part) for part in iter_index_parts(blocks, [events]))
    offset = DATA_START + len(blocks) * (BLOCK_HEADER_SIZE + 10)
    return check_index(
        lambda at, n: raw[at - offset : at - offset + n],
        offset=offset,
        length=len(raw),
        digest=xxhash.xxh3_64_intdigest(raw),
        data_start=DATA_START,
        chunk_events=chunk_events,
    )


@pytest.mark.parametrize("chunk_events", [1, 2, 3, 5, 64])
def test_index_checked_in_pieces(chunk_events):
    rng = np.random.default_rng(chunk_events)
    for _ in range(20):
        counts = rng.integers(1, 6, int(rng.integers(1, 8)))
        lengths = rng.integers(0, 1000, int(counts.sum()))
        blocks, events = _index(counts, lengths)
        found, nevents = _check(blocks, events, chunk_events)
        assert nevents == len(lengths) and np.array_equal(found, blocks)
        victim = int(rng.integers(0, len(lengths)))
        wrong_block = events.block.copy()
        wrong_block[victim] = (wrong_block[victim] + 1) % (len(counts) + 1)
        with pytest.raises(LayoutError, match="block numbers disagree"):
            _check(blocks, events.replace(block=wrong_block), chunk_events)
        wrong_length = events.length.copy()
        wrong_length[victim] += 1
        with pytest.raises(LayoutError, match="event lengths do not add up"):
            _check(blocks, events.replace(length=wrong_length), chunk_events)
        empty = blocks.copy()
        empty["event_count"][0] = 0
        with pytest.raises(LayoutError):
            _check(empty, events, chunk_events)
