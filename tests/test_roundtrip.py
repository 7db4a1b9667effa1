"""Round trips through the TMB writer and reader, driven by hypothesis.

Whatever events go in (any runs, event numbers and payloads, empty payloads included), written
with any block size (small ones force many blocks), codec, write path (``write_event``,
``write_batch`` or a mix) and thread count, must come back identically through both the
decoded events (``iter_events``) and the index columns (``reader.events``), and the adler32 the
writer reports must be that of the bytes on disk.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_contract import assert_events_read_back

from engine.format import RECORD_HEADER_SIZE
from engine.readers import open_file
from engine.verify import verify_file
from engine.writer import TmbWriter

EVENT = st.tuples(
    st.integers(0, 2**32 - 1),  # run
    st.integers(0, 2**64 - 1),  # event number
    st.binary(min_size=0, max_size=80),  # payload (empty ones included)
)

# How the events are handed to the writer: each chunk goes through one path.
WRITE_PLAN = st.lists(
    st.tuples(st.sampled_from(["event", "batch"]), st.integers(1, 12)), min_size=1, max_size=6
)

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_names = itertools.count()


def write_file(path, events, *, codec, block_bytes, threads, plan):
    """Write ``events`` following ``plan`` (path, chunk size) pairs, cycling until all are
    written."""
    with TmbWriter(
        path, codec=codec, block_bytes=block_bytes, threads=threads, fsync=False
    ) as writer:
        pos = 0
        for how, size in itertools.cycle(plan):
            if pos >= len(events):
                break
            chunk = events[pos : pos + size]
            pos += len(chunk)
            if how == "event":
                for run, event, payload in chunk:
                    writer.write_event(run, event, payload)
            else:
                writer.write_batch(
                    [r for r, _, _ in chunk],
                    [e for _, e, _ in chunk],
                    [len(p) for _, _, p in chunk],
                    b"".join(p for _, _, p in chunk),
                )
    return writer.result


def assert_reads_back(path, events, block_bytes):
    with open_file(path) as reader:
        assert_events_read_back(reader, events)  # decoded events and index columns

        blocks = reader.blocks
        assert reader.block_count == len(blocks)
        assert np.all(blocks["event_count"] > 0)
        # Blocks are cut at the target size; only a single oversized event may exceed it.
        over = blocks["uncompressed_length"] > block_bytes
        assert np.all(blocks["event_count"][over] == 1)
        if len(events):
            assert int(blocks["uncompressed_length"].sum()) == sum(
                len(p) + RECORD_HEADER_SIZE for _, _, p in events
            )


@SETTINGS
@given(
    events=st.lists(EVENT, min_size=1, max_size=60),
    block_bytes=st.integers(RECORD_HEADER_SIZE + 1, 400),
    codec=st.sampled_from(["none", "zstd"]),
    threads=st.sampled_from([1, 2]),
    plan=WRITE_PLAN,
)
def test_events_round_trip(tmp_path, events, block_bytes, codec, threads, plan):
    path = tmp_path / f"rt{next(_names)}.tmb"
    result = write_file(
        path, events, codec=codec, block_bytes=block_bytes, threads=threads, plan=plan
    )

    data = path.read_bytes()
    assert result.file_size == len(data)
    assert result.adler32 == zlib.adler32(data)
    assert result.event_count == len(events)
    assert result.first_event == min(e for _, e, _ in events)
    assert result.last_event == max(e for _, e, _ in events)
    assert result.runs == sorted({r for r, _, _ in events})

    assert_reads_back(path, events, block_bytes)
    report = verify_file(path, deep=True, metadata="none")
    assert report.ok, report.error
    assert report.adler32 == result.adler32
    path.unlink()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 3000),
    max_len=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
    codec=st.sampled_from(["none", "zstd"]),
    threads=st.sampled_from([1, 2]),
    block_bytes=st.integers(64, 8192),
)
def test_large_batch_round_trip(tmp_path, n, max_len, seed, codec, threads, block_bytes):
    """Thousands of events in one ``write_batch``: many blocks, cut with no per-event Python
    loop."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, 2**32, n, dtype=np.uint32)
    numbers = rng.integers(0, 2**63, n, dtype=np.uint64)
    lengths = rng.integers(0, max_len + 1, n, dtype=np.uint32)
    payload = rng.integers(0, 4, int(lengths.sum()), dtype=np.uint8)  # compressible
    path = tmp_path / f"big{next(_names)}.tmb"
    with TmbWriter(
        path, codec=codec, block_bytes=block_bytes, threads=threads, fsync=False
    ) as writer:
        writer.write_batch(runs, numbers, lengths, payload.tobytes())
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    expected = [
        (int(runs[i]), int(numbers[i]), payload[starts[i] : starts[i + 1]].tobytes())
        for i in range(n)
    ]

    assert writer.result.adler32 == zlib.adler32(path.read_bytes())
    assert_reads_back(path, expected, block_bytes)
    path.unlink()


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_empty_file_round_trip(tmp_path, codec):
    path = tmp_path / "empty.tmb"
    with TmbWriter(path, codec=codec, fsync=False, metadata={"note": "no events"}) as writer:
        pass
    result = writer.result
    data = path.read_bytes()
    assert (
        result.event_count,
        result.block_count,
        result.first_event,
        result.last_event,
        result.runs,
    ) == (0, 0, None, None, [])
    assert result.file_size == len(data)
    assert result.adler32 == zlib.adler32(data)

    with open_file(path) as reader:
        assert reader.event_count == 0 and reader.block_count == 0
        assert len(reader.events) == 0 and len(reader.blocks) == 0
        assert list(reader.iter_events()) == []
        assert list(reader.iter_blocks()) == []
        assert reader.metadata["note"] == "no events"
        assert reader.metadata["file_name"] == "empty.tmb"
    report = verify_file(path, deep=True, metadata="none")
    assert report.ok and report.event_count == 0 and report.adler32 == result.adler32


def test_write_batch_after_write_event_keeps_call_order(tmp_path):
    """Events still buffered by ``write_event`` are written before a following batch."""
    path = tmp_path / "order.tmb"
    with TmbWriter(path, codec="zstd", block_bytes=10_000, fsync=False) as writer:
        writer.write_event(1, 10, b"first")
        writer.write_batch([1, 1], [11, 12], [3, 0], b"abc")
        writer.write_event(2, 13, b"")
    with open_file(path) as reader:
        got = [(e.run, e.event, bytes(e.payload)) for e in reader.iter_events()]
    assert got == [(1, 10, b"first"), (1, 11, b"abc"), (1, 12, b""), (2, 13, b"")]
