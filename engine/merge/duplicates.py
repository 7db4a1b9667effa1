"""Duplicate (run, event) detection over a merge's inputs, in memory that does not grow with events.

A merge refuses an input that repeats a (run, event) already seen in an earlier input (or in
itself): a resubmitted job's output beside the original, or a partition merged twice.  Finding
repeats means ordering every key of every input.  Holding all keys at once costs ~50 bytes per
event (keys, positions, the sort's permutation), 500 MB for 10 million events, so this is an
external sort:

0. The usual inputs, each in ascending event order and their event ranges apart, cannot repeat a
   key: one pass over the keys (each table ascending, the tables' ranges disjoint) shows it and
   nothing is sorted or written.  Otherwise, from the start:
1. The inputs' (run, event) columns are read a chunk at a time, in input order, and numbered by
   their position in the concatenation of all inputs.  Every ``run_events`` keys are sorted by
   (key, position) and written to a temporary file as one sorted run.
2. The runs are merged k ways in batches: each run lends a window of its next keys; every key
   not above the smallest window end (by key, then position) is certainly final, so those are
   merged, checked for repeats and dropped, and the windows move on.  When the runs' key ranges
   do not overlap, the runs in order of their first key already are that order: they are read
   one after the other and nothing is merged (the k-way merge costs ~0.7 us a key in
   Python-level batches; this, the sort of each run).
3. A key equal to its predecessor in that order is a repeat; its first occurrence is the first
   of its group, and carried to the next batch when the group may go on there.

The key is ``run << 32 | event`` when every event number fits in 32 bits (always, in practice);
otherwise a 64-bit mix of both, in which case equal keys are told apart by (run, event) too.
Small merges (up to ``run_events`` keys) sort once in memory and write nothing.  Memory: one
chunk of keys and the merge's windows, a few MB whatever the number of events.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO

import numpy as np

SORTED_RUN_EVENTS = 1 << 17  # keys sorted at once (2-4 MB)
MERGE_WINDOW_BYTES = 4 << 20  # what the k-way merge reads ahead, over all runs
MIN_WINDOW_EVENTS = 4096

_NARROW = np.dtype([("key", "<u8"), ("pos", "<u8")])
_WIDE = np.dtype([("key", "<u8"), ("run", "<u4"), ("event", "<u8"), ("pos", "<u8")])


def find_duplicate_events(
    tables, *, wide: bool | None = None, run_events: int = SORTED_RUN_EVENTS, spill_dir=None
) -> dict[int, tuple[int, int, int]]:
    """For every table that repeats a (run, event) seen earlier (or within itself): the first such
    key (the earliest position in that table) and the table holding its first occurrence.

    ``tables`` are ``EventTable``s or readers (anything with ``iter_event_chunks()``), in merge
    order.  ``wide``: whether some event number needs more than 32 bits (found by a first pass over
    the event columns when not given).  Sorted runs that do not fit ``run_events`` go to a
    temporary file in ``spill_dir``.
    """
    tables = list(tables)
    if wide is None:
        wide = any(
            int(part.event.max()) >= 1 << 32 for t in tables for part in _chunks(t) if len(part)
        )
    if not wide and _ascending_and_disjoint(tables):
        return {}
    sorter = _Sorter(wide, run_events, spill_dir)
    starts = []
    position = 0
    try:
        for table in tables:
            starts.append(position)
            for part in _chunks(table):
                sorter.add(part.run, part.event, position)
                position += len(part)
        return _offenders(sorter.batches(), np.asarray(starts, dtype=np.int64), wide)
    finally:
        sorter.close()


def _ascending_and_disjoint(tables) -> bool:
    """Whether every table's keys strictly ascend and no two tables' key ranges overlap: then no
    (run, event) repeats, within a table or across tables, and nothing needs sorting.  One
    vectorised comparison per chunk (a few ns a key against the external sort's ~0.2 us); it
    stops at the first key out of order, so inputs that fail it cost little before the sort."""
    ranges: list[tuple[int, int]] = []
    for table in tables:
        first: int | None = None
        last: int | None = None
        for part in _chunks(table):
            if not len(part):
                continue
            keys = _keys(part.run, part.event, False)
            if last is not None and int(keys[0]) <= last:
                return False
            if not bool(np.all(keys[1:] > keys[:-1])):
                return False
            if first is None:
                first = int(keys[0])
            last = int(keys[-1])
        if first is not None and last is not None:
            ranges.append((first, last))
    ranges.sort()
    return all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def _chunks(table):
    return table.iter_event_chunks() if hasattr(table, "iter_event_chunks") else [table]


def _keys(runs: np.ndarray, events: np.ndarray, wide: bool) -> np.ndarray:
    if not wide:
        return (runs.astype(np.uint64) << np.uint64(32)) | events.astype(np.uint64)
    # splitmix64 finaliser of (run, event): equal pairs give equal keys; unequal ones are told apart
    with np.errstate(over="ignore"):
        x = events.astype(np.uint64) ^ (runs.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _sorted(records: np.ndarray) -> np.ndarray:
    """Records in (key, position) order, from records in position order (how every caller holds
    them): a stable sort by key keeps equal keys in position order, at less than half a lexsort's
    cost on the nearly sorted keys of real inputs."""
    return records[np.argsort(records["key"], kind="stable")]


class _Sorter:
    """Step 1: keys in, sorted runs out (in memory for one run, else in a temporary file)."""

    def __init__(self, wide: bool, run_events: int, spill_dir):
        self.dtype = _WIDE if wide else _NARROW
        self.wide = wide
        self.run_events = max(1, run_events)
        self.spill_dir = spill_dir
        self.pending: list[np.ndarray] = []
        self.pending_count = 0
        self.file: BinaryIO | None = None
        self.runs: list[tuple[int, int]] = []  # (offset in the file, records) of each sorted run
        self.ranges: list[tuple[int, int]] = []  # (first key, last key) of each sorted run

    def add(self, runs: np.ndarray, events: np.ndarray, first_position: int) -> None:
        start = 0
        while start < len(runs):
            stop = min(len(runs), start + self.run_events - self.pending_count)
            records = np.empty(stop - start, dtype=self.dtype)
            records["key"] = _keys(runs[start:stop], events[start:stop], self.wide)
            records["pos"] = np.arange(
                first_position + start, first_position + stop, dtype=np.uint64
            )
            if self.wide:
                records["run"], records["event"] = runs[start:stop], events[start:stop]
            self.pending.append(records)
            self.pending_count += len(records)
            if self.pending_count >= self.run_events:
                self._spill()
            start = stop

    def _take_pending(self) -> np.ndarray:
        records = _sorted(np.concatenate(self.pending)) if self.pending else np.empty(0, self.dtype)
        self.pending, self.pending_count = [], 0
        return records

    def _spill(self) -> None:
        records = self._take_pending()
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="tmbmerge-keys-", dir=self.spill_dir)
        offset = self.file.seek(0, os.SEEK_END)
        self.file.write(records.data.cast("B"))
        self.runs.append((offset, len(records)))
        if len(records):
            self.ranges.append((int(records["key"][0]), int(records["key"][-1])))
        else:
            self.ranges.append((0, -1))

    def batches(self):
        """Step 2: every record, in (key, position) order, in batches."""
        if not self.runs:
            yield self._take_pending()
            return
        if self.pending:
            self._spill()
        assert self.file is not None  # runs were spilled, so the file exists
        self.file.flush()
        order = sorted(range(len(self.runs)), key=lambda i: self.ranges[i])
        if all(
            self.ranges[a][1] < self.ranges[b][0] for a, b in zip(order, order[1:], strict=False)
        ):  # disjoint: no key is in two runs, and the runs in this order are in key order
            for i in order:
                offset, count = self.runs[i]
                raw = os.pread(self.file.fileno(), count * self.dtype.itemsize, offset)
                yield np.frombuffer(raw, dtype=self.dtype)
            return
        yield from _merge_runs(self.file.fileno(), self.runs, self.dtype)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _merge_runs(fd: int, runs: list[tuple[int, int]], dtype: np.dtype):
    window = max(MIN_WINDOW_EVENTS, MERGE_WINDOW_BYTES // (dtype.itemsize * len(runs)))
    cursor = [0] * len(runs)
    loaded = [np.empty(0, dtype) for _ in runs]  # each run's window, empty until (re)loaded

    def load(i: int) -> np.ndarray:
        offset, count = runs[i]
        n = min(window, count - cursor[i])
        raw = os.pread(fd, n * dtype.itemsize, offset + cursor[i] * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype)

    while True:
        live = []
        for i, (_, count) in enumerate(runs):
            if cursor[i] < count and not len(loaded[i]):
                loaded[i] = load(i)
            if len(loaded[i]):
                live.append(i)
        if not live:
            return
        # the smallest window end over runs that have more beyond their window bounds the batch
        ends = [
            (int(loaded[i]["key"][-1]), int(loaded[i]["pos"][-1]))
            for i in live
            if cursor[i] + len(loaded[i]) < runs[i][1]
        ]
        bound = min(ends) if ends else None
        parts = []
        for i in live:
            records = loaded[i]
            take = len(records) if bound is None else _count_not_above(records, bound)
            parts.append(records[:take])
            loaded[i] = records[take:]
            cursor[i] += take
        yield _sorted(np.concatenate(parts))


def _count_not_above(records: np.ndarray, bound: tuple[int, int]) -> int:
    """How many of ``records`` (sorted by key, position) are at most ``bound`` in that order."""
    key, pos = bound
    keys = records["key"]
    if int(keys[0]) > key:  # the whole window comes later (most windows, most batches)
        return 0
    low = int(np.searchsorted(keys, np.uint64(key), side="left"))
    high = int(np.searchsorted(keys, np.uint64(key), side="right"))
    return low + int(np.searchsorted(records["pos"][low:high], np.uint64(pos), side="right"))


def _offenders(batches, starts: np.ndarray, wide: bool) -> dict[int, tuple[int, int, int]]:
    """Step 3: repeats in batches of records in (key, position) order."""
    found: dict[int, tuple[int, int, int, int]] = {}  # table -> (position, run, event, first table)
    carry = None  # first occurrences of the last key group of the previous batch
    for records in batches:
        if carry is not None and len(carry):
            records = np.concatenate([carry, records])
        if not len(records):
            continue
        if (
            wide
        ):  # equal keys, unequal (run, event): order by the pair too so equal pairs are adjacent
            records = records[
                np.lexsort((records["pos"], records["event"], records["run"], records["key"]))
            ]
            same = (
                (records["key"][1:] == records["key"][:-1])
                & (records["run"][1:] == records["run"][:-1])
                & (records["event"][1:] == records["event"][:-1])
            )
        else:
            same = records["key"][1:] == records["key"][:-1]
        head = np.concatenate([[True], ~same])  # first of its (run, event) group
        heads = np.flatnonzero(head)
        group_first = records["pos"][heads[np.cumsum(head) - 1]]
        repeat = ~head
        if repeat.any():
            _record(found, records[repeat], group_first[repeat], starts, wide)
        last_key = records["key"][-1]
        carry = records[head & (records["key"] == last_key)]
    return {table: (run, event, first) for table, (_, run, event, first) in found.items()}


def _record(
    found: dict, repeats: np.ndarray, firsts: np.ndarray, starts: np.ndarray, wide: bool
) -> None:
    """Keep, for each table, its earliest repeated event."""
    order = np.argsort(repeats["pos"], kind="stable")
    repeats, firsts = repeats[order], firsts[order]
    tables = np.searchsorted(starts, repeats["pos"].astype(np.int64), side="right") - 1
    unique_tables, first_index = np.unique(tables, return_index=True)
    for table, i in zip(unique_tables.tolist(), first_index.tolist(), strict=True):
        pos = int(repeats["pos"][i])
        if table in found and found[table][0] <= pos:
            continue
        if wide:
            run, event = int(repeats["run"][i]), int(repeats["event"][i])
        else:
            key = int(repeats["key"][i])
            run, event = key >> 32, key & 0xFFFFFFFF
        origin = int(np.searchsorted(starts, np.int64(firsts[i]), side="right") - 1)
        found[table] = (pos, run, event, origin)
