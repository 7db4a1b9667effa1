"""Issue 5: the engine's building blocks, each against the plain operation it cannot beat.

Run on demand::

    python -m pytest bench/test_bench_micro.py --benchmark-only -p no:cacheprovider

Each candidate is paired with its baseline round by round (``engine.benchmark.paired``), and the
ratio ``candidate rate / baseline rate`` (1.0: as fast as the baseline) goes to ``extra_info``
and to the session's ratio summary:

- writer: ``TmbWriter.write_batch`` + close (frame, digest, zstd level 3 on one thread, fsync) of
  ~256 MB of generated payloads vs ``os.write`` of the same payload bytes + fsync;
- reader: ``iter_blocks`` with the whole-file adler32 (every block's digest checked) and
  ``iter_events`` (every block decoded, a Python object per event) over a generated run
  (``TMBMERGE_BENCH_MICRO_SIZE``, default 512 MiB in 8 files, page cache warm) vs plain
  sequential reads of the same files;
- block copy: ``iter_blocks`` -> ``TmbWriter.copy_block`` (the merge's core, with no pre-flight,
  thread or verification) vs concatenating the same files with plain read/write, both fsynced;
- index loading: opening a file of 2 million events (a 56 MB index: read, digest-checked,
  validated, mapped to numpy) vs plain ``pread`` of exactly the bytes opening reads;
- duplicate detection: ``find_duplicate_events`` over 10 million events in 100 tables vs a
  plain ``np.sort(kind="stable")`` of the same 10 million (run, event) keys, already built (the
  sort the function cannot avoid; stable, as it needs, and fastest on keys that arrive in order).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from plain_io import write_plain

from engine.benchmark.paired import record, run_paired
from engine.benchmark.storage import concatenate, read_sequential
from engine.units import parse_size

MICRO_SIZE = parse_size(os.environ.get("TMBMERGE_BENCH_MICRO_SIZE", "512MiB"))
MICRO_FILES = 8
WRITE_BYTES = 256 * 10**6
INDEX_EVENTS = 2_000_000
DUPLICATE_EVENTS = 10_000_000
DUPLICATE_TABLES = 100
RUN = 178000
CHUNK = 4 << 20

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def run(bench_run):
    return bench_run(MICRO_SIZE, MICRO_FILES)


def _emptied(folder):
    def cleanup():
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    return cleanup


def _note(bench_ratios, request, ratios):
    for name, r in ratios.items():
        bench_ratios.add(request.node.name, name, r["value"], best=r["best"])


# -- writer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payloads():
    """About WRITE_BYTES of generated payloads: (runs, events, lengths, payload bytes)."""
    from engine.generate import build_payloads, event_sizes

    n = int(WRITE_BYTES / 15_000)
    lengths = event_sizes(7, RUN, 0, n, 15.0)
    events = np.arange(1, n + 1, dtype=np.uint64)
    data = build_payloads(np.random.PCG64(7), RUN, events, lengths)
    return np.full(n, RUN, dtype=np.uint32), events, lengths, data


def test_writer_vs_plain_write(benchmark, payloads, bench_scratch, bench_ratios, request):
    from engine.writer import TmbWriter

    runs, events, lengths, data = payloads

    def write():
        with TmbWriter(bench_scratch / "written.tmb") as writer:
            writer.write_batch(runs, events, lengths, data)
        return writer.result

    paired = run_paired(
        benchmark,
        write,
        len(data),
        baselines={
            "plain_write": (lambda: write_plain(bench_scratch / "plain.bin", data), len(data))
        },
        rounds=3,
        cleanup=_emptied(bench_scratch),
    )
    _note(
        bench_ratios,
        request,
        record(benchmark, paired, targets={"writer_vs_plain_write": ("plain_write", None)}),
    )
    assert write().event_count == len(events)


# -- reader ------------------------------------------------------------------------------------


def _read_plain(paths):
    def read():
        for path in paths:
            read_sequential(path, chunk=CHUNK)

    return read


def _iter_blocks(paths):
    from engine.checksums import RunningAdler32
    from engine.readers import open_file

    def read():
        blocks = 0
        for path in paths:
            with open_file(path) as reader:
                adler = RunningAdler32()
                for _ in reader.iter_blocks(adler):
                    blocks += 1
        return blocks

    return read


def _iter_events(paths):
    from engine.readers import open_file

    def read():
        events = 0
        for path in paths:
            with open_file(path) as reader:
                for _ in reader.iter_events():
                    events += 1
        return events

    return read


@pytest.mark.parametrize("how", ["iter_blocks", "iter_events"])
def test_reader_vs_plain_read(benchmark, run, bench_ratios, request, how):
    candidate = _iter_blocks(run.paths) if how == "iter_blocks" else _iter_events(run.paths)
    _read_plain(run.paths)()  # page cache warm for both sides
    paired = run_paired(
        benchmark,
        candidate,
        run.bytes,
        baselines={"plain_read": (_read_plain(run.paths), run.bytes)},
        rounds=5,
    )
    _note(
        bench_ratios,
        request,
        record(benchmark, paired, targets={f"reader_{how}_vs_plain_read": ("plain_read", None)}),
    )
    if how == "iter_events":
        assert candidate() == run.events


# -- block copy ----------------------------------------------------------------------------------


def test_block_copy_vs_concatenate(benchmark, run, bench_scratch, bench_ratios, request):
    from engine.readers import open_file
    from engine.writer import TmbWriter

    def block_copy():
        with TmbWriter(bench_scratch / "copied.tmb") as writer:
            for path in run.paths:
                with open_file(path) as reader:
                    for block in reader.iter_blocks():
                        writer.copy_block(block.header, block.stored, block.events)
        return writer.result

    paired = run_paired(
        benchmark,
        block_copy,
        run.bytes,
        baselines={
            "concatenate": (lambda: concatenate(run.paths, bench_scratch / "cat.bin"), run.bytes)
        },
        rounds=3,
        cleanup=_emptied(bench_scratch),
    )
    _note(
        bench_ratios,
        request,
        record(benchmark, paired, targets={"block_copy_vs_concatenate": ("concatenate", None)}),
    )
    assert block_copy().event_count == run.events


# -- index loading -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed_file(tmp_path_factory):
    """A file of INDEX_EVENTS tiny events: its index dominates it."""
    from engine.writer import TmbWriter

    path = tmp_path_factory.mktemp("index") / "many_events.tmb"
    n = INDEX_EVENTS
    payload_bytes = 16
    payload = np.random.default_rng(3).integers(0, 256, n * payload_bytes, dtype=np.uint8)
    with TmbWriter(path, fsync=False) as writer:
        writer.write_batch(
            np.full(n, RUN, dtype=np.uint32),
            np.arange(1, n + 1, dtype=np.uint64),
            np.full(n, payload_bytes, dtype=np.uint32),
            payload,
        )
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


def test_index_loading_vs_pread(benchmark, indexed_file, bench_ratios, request):
    from engine.format import HEADER_SIZE, TRAILER_SIZE
    from engine.readers import open_file

    with open_file(indexed_file) as reader:
        regions = [
            (HEADER_SIZE + reader.header.metadata_length, 0),
            (TRAILER_SIZE, reader.file_size - TRAILER_SIZE),
            (reader.trailer.index_length, reader.trailer.index_offset),
        ]
        index_bytes = reader.trailer.index_length

    def open_close():
        with open_file(indexed_file) as reader:
            return reader.event_count

    def pread_same_bytes():
        fd = os.open(indexed_file, os.O_RDONLY)
        try:
            return sum(len(os.pread(fd, length, offset)) for length, offset in regions)
        finally:
            os.close(fd)

    paired = run_paired(
        benchmark,
        open_close,
        index_bytes,
        baselines={"pread": (pread_same_bytes, index_bytes)},
        rounds=7,
    )
    _note(
        bench_ratios,
        request,
        record(benchmark, paired, targets={"index_open_vs_pread": ("pread", None)}),
    )
    benchmark.extra_info["index_MB"] = round(index_bytes / 1e6, 1)
    assert open_close() == INDEX_EVENTS


# -- duplicate detection -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def event_tables():
    """DUPLICATE_EVENTS events of one run in DUPLICATE_TABLES tables; the last event repeats the
    first."""
    from engine.format import EventTable

    per = DUPLICATE_EVENTS // DUPLICATE_TABLES
    gaps = np.random.default_rng(5).geometric(0.8, DUPLICATE_EVENTS).astype(np.uint64)
    numbers = np.cumsum(gaps, dtype=np.uint64)
    numbers[-1] = numbers[0]
    tables = []
    for i in range(DUPLICATE_TABLES):
        ev = numbers[i * per : (i + 1) * per]
        n = len(ev)
        tables.append(
            EventTable(
                ev,
                np.zeros(n, np.uint64),
                np.full(n, RUN, np.uint32),
                np.full(n, 15000, np.uint32),
                np.zeros(n, np.uint32),
            )
        )
    return tables


def test_duplicate_detection_vs_sort(benchmark, event_tables, bench_ratios, request):
    from engine.merge.inputs import find_duplicate_events

    keys = np.concatenate(
        [(t.run.astype(np.uint64) << np.uint64(32)) | t.event for t in event_tables]
    )
    found = {}
    paired = run_paired(
        benchmark,
        lambda: found.update(find_duplicate_events(event_tables)),
        DUPLICATE_EVENTS,
        baselines={"np_sort": (lambda: np.sort(keys, kind="stable"), DUPLICATE_EVENTS)},
        rounds=5,
    )
    _note(
        bench_ratios,
        request,
        record(benchmark, paired, targets={"find_duplicates_vs_sort": ("np_sort", None)}),
    )
    benchmark.extra_info["Mevents/s"] = round(paired.candidate.rate / 1e6, 2)
    first = int(event_tables[0].event[0])
    assert found == {DUPLICATE_TABLES - 1: (RUN, first, 0)}
