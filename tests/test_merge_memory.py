"""A merge's memory does not grow with its events, and its open files do not grow with its inputs.

Memory is measured with ``tracemalloc`` (numpy's buffers are traced), not with the clock: a merge
of 1.2 million small events must peak within a small margin of one of 150,000, every table bigger
than the bounds in ``format.INDEX_CHUNK_EVENTS``, ``spool.SPOOL_MEMORY_EVENTS`` and
``duplicates.SORTED_RUN_EVENTS`` either way, so only what grows with events can differ.  Held whole,
the tables cost ~50 bytes an event: 50 MB between the two.  Files are written with tiny payloads
(32 bytes, no compression) so the test moves only ~60 MB, in blocks of the same size in both
merges (a block in flight carries its events' index entries).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine.errors import InputError
from engine.format import EventTable
from engine.merge import MergeSpec, merge_files
from engine.merge.duplicates import find_duplicate_events
from engine.readers import open_file
from engine.writer import TmbWriter

PAYLOAD = 32
BLOCK_BYTES = 256 << 10  # ~5,000 events a block in both merges: the blocks in flight weigh the same
MARGIN_BYTES = 3 << 20


def write_tiny_file(
    path: Path, *, first_event: int, n_events: int, run: int = 178000, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    with TmbWriter(
        path,
        codec="none",
        fsync=False,
        block_bytes=BLOCK_BYTES,
        metadata={"runs": [[run, 0, "physics"]]},
    ) as writer:
        for start in range(0, n_events, 1 << 18):
            n = min(1 << 18, n_events - start)
            writer.write_batch(
                np.full(n, run),
                np.arange(first_event + start, first_event + start + n),
                np.full(n, PAYLOAD),
                rng.integers(0, 256, n * PAYLOAD, dtype=np.uint8),
            )
    return path


def tiny_run(folder: Path, *, files: int, events_per_file: int) -> list[Path]:
    folder.mkdir()
    return [
        write_tiny_file(
            folder / f"tmb_0000178000_p{i:03d}.tmb",
            first_event=i * events_per_file,
            n_events=events_per_file,
            seed=i,
        )
        for i in range(files)
    ]


def traced_peak(inputs, output, mode) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        report = merge_files(inputs, output, MergeSpec(mode=mode, metadata="none", fsync=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.event_count == sum(open_file(p).event_count for p in inputs)
    return peak


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    return (
        tiny_run(folder / "small", files=3, events_per_file=50_000),
        tiny_run(folder / "large", files=3, events_per_file=400_000),
    )


@pytest.mark.parametrize("mode", ["fast", "safe"])
def test_merge_memory_does_not_grow_with_events(tmp_path, small_and_large, mode):
    small, large = small_and_large
    traced_peak(small, tmp_path / "warm.tmb", mode)  # imports and caches, outside the measure
    peak_small = traced_peak(small, tmp_path / "small.tmb", mode)
    peak_large = traced_peak(large, tmp_path / "large.tmb", mode)
    assert peak_large < peak_small + MARGIN_BYTES, (peak_small, peak_large)


def test_merge_with_few_open_files(tmp_path):
    """300 inputs merge under a limit of 48 open files (every input used to be open at once)."""
    inputs = tiny_run(tmp_path / "many", files=300, events_per_file=20)
    script = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
        from engine.merge import merge_files, MergeSpec
        spec = MergeSpec(mode="safe", metadata="none", fsync=False)
        report = merge_files(sys.argv[2:], sys.argv[1], spec)
        print(report.event_count)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.tmb"), *map(str, inputs)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 300 * 20


def test_released_reader_refuses_a_file_changed_meanwhile(tmp_path):
    path = write_tiny_file(tmp_path / "a.tmb", first_event=0, n_events=100)
    with open_file(path) as reader:
        reader.release()
        replacement = write_tiny_file(tmp_path / "b.tmb", first_event=0, n_events=200, seed=3)
        os.replace(replacement, path)
        with pytest.raises(InputError, match="changed since it was opened"):
            list(reader.iter_blocks())


def _table(runs, events) -> EventTable:
    n = len(events)
    zeros = np.zeros(n, dtype=np.uint32)
    return EventTable(
        np.asarray(events, dtype=np.uint64),
        np.zeros(n, dtype=np.uint64),
        np.asarray(runs, dtype=np.uint32),
        zeros,
        zeros,
    )


def _reference(tables) -> dict:
    """Every (run, event) in order: a table's first repeat, and the table first holding it."""
    seen, found = {}, {}
    for t, table in enumerate(tables):
        for run, event in zip(table.run.tolist(), table.event.tolist(), strict=True):
            if (run, event) in seen:
                found.setdefault(t, (run, event, seen[(run, event)]))
            else:
                seen[(run, event)] = t
    return found


@pytest.mark.parametrize("wide", [False, True])
def test_external_duplicate_search_agrees_with_a_plain_one(monkeypatch, wide):
    """Sorted runs of 1-7 keys merged through windows of one key: every boundary case of the
    external sort, against a dictionary walk; wide event numbers (> 32 bits) too."""
    import engine.merge.duplicates as duplicates

    monkeypatch.setattr(duplicates, "MIN_WINDOW_EVENTS", 1)
    monkeypatch.setattr(duplicates, "MERGE_WINDOW_BYTES", 1)
    rng = np.random.default_rng(5)
    for trial in range(30):
        tables = []
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(0, 30))
            events = rng.integers(0, 120, n).astype(np.uint64)
            if wide:
                events += np.uint64(1 << 40) * rng.integers(0, 2, n).astype(np.uint64)
            tables.append(_table(rng.integers(1, 3, n), events))
        expected = _reference(tables)
        for run_events in (1, 3, 7, 10_000):
            assert find_duplicate_events(tables, run_events=run_events, wide=wide) == expected, (
                trial,
                run_events,
            )


def test_inputs_in_event_order_are_checked_without_merging_runs(monkeypatch):
    """Inputs whose event numbers follow each other (the usual case) give sorted runs with
    disjoint key ranges, read in order with no k-way merge; runs that touch or overlap (a repeat
    across a run boundary) still go through the merge.  Both agree with a dictionary walk."""
    import engine.merge.duplicates as duplicates

    merges = []
    real_merge = duplicates._merge_runs
    monkeypatch.setattr(
        duplicates, "_merge_runs", lambda *args: merges.append(1) or real_merge(*args)
    )
    rng = np.random.default_rng(11)
    for trial in range(40):
        tables, next_event = [], 0
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(0, 25))
            steps = rng.integers(1, 4, n)
            steps[rng.random(n) < 0.05] = 0  # a repeat within a table now and then
            events = next_event + np.cumsum(steps) - 1
            if trial % 4 == 3 and n:
                events[0] = max(0, next_event - 1)  # repeats the previous table's last event
            next_event = int(events[-1]) + 1 if n else next_event
            tables.append(_table(np.full(n, 178000), events))
        expected = _reference(tables)
        for run_events in (1, 4, 7, 10_000):
            merges.clear()
            assert find_duplicate_events(tables, run_events=run_events) == expected, trial
            total = sum(len(t.event) for t in tables)
            if trial % 4 != 3 and not expected and total > run_events:
                assert not merges  # several runs, disjoint: read one after the other


def test_ascending_disjoint_inputs_are_checked_without_sorting(monkeypatch):
    """Tables each in strictly ascending event order with ranges apart (in any table order) cannot
    repeat an event: nothing is sorted.  A key out of order anywhere (a repeat within a table, a
    range touching another's, events not ascending) falls back to the sort, which finds the
    same repeats as a dictionary walk."""
    import engine.merge.duplicates as duplicates

    sorters = []
    real_sorter = duplicates._Sorter
    monkeypatch.setattr(
        duplicates, "_Sorter", lambda *args: sorters.append(1) or real_sorter(*args)
    )
    ascending = [_table([7] * 3, [0, 2, 5]), _table([7] * 2, [6, 9]), _table([], [])]
    for tables in (ascending, ascending[::-1], [_table([6] * 2, [50, 60]), *ascending]):
        sorters.clear()
        assert find_duplicate_events(tables, run_events=2) == {}
        assert not sorters
    fallbacks = {
        "repeat within a table": [_table([7] * 3, [0, 2, 2]), _table([7], [9])],
        "ranges touch": [_table([7] * 2, [0, 5]), _table([7] * 2, [5, 9])],
        "ranges overlap, no repeat": [_table([7] * 2, [0, 5]), _table([7] * 2, [3, 9])],
        "descending": [_table([7] * 3, [5, 2, 0])],
        "repeat in a later chunk": [_table([7] * 3, [0, 1, 2]), _table([7] * 3, [3, 4, 1])],
    }
    for why, tables in fallbacks.items():
        sorters.clear()
        assert find_duplicate_events(tables, run_events=2) == _reference(tables), why
        assert sorters, why
