"""Issue 3: merge throughput and memory against the plain copy, on a run of >= 2 GB in >= 40 files.

Run on demand::

    python -m pytest bench/test_bench_merge.py --benchmark-only -p no:cacheprovider

One run is generated per session (``bench_run``; 2 GiB in 40 files unless ``TMBMERGE_BENCH_SIZE``
/ ``TMBMERGE_BENCH_FILES`` say otherwise, e.g. for a smoke run) and removed afterwards.  Every
candidate is timed with ``pedantic`` for ``TMBMERGE_BENCH_ROUNDS`` rounds (default 3), each round
preceded by its baselines (``engine.benchmark.paired``: B A B A ...), outputs removed and
writeback flushed outside the clocks.  Inputs are in the page cache (just generated), as for
files that just arrived.  The ratios, under the same names as ``tmbmerge bench`` reports them
(``engine.benchmark.figures.TARGETS``), go to each benchmark's ``extra_info`` and to the
summary at the end of the session:

- baseline: the run's files concatenated into one with plain read/write and fsynced;
- fast and safe merges, 1 job (``merge_files``): fast/copy (target >= 0.9), safe/copy (>= 0.7),
  and, for information, against the same copy written the way merges write (writeback started
  behind the writer, pages dropped once on their way): what the checks themselves cost;
- deep merge, 1 job, against decode + re-encode of every event (the copyd0om way; >= 3x faster)
  and against zstd decompression of the same blocks on all cores (threads; within 2x);
- ``merge_run`` with 2 jobs in each mode, against the copy and against the same mode with 1 job;
- peak RSS of every mode measured in a fresh process each (< 300 MB; asserted).

Ratios are reported, not asserted: a missed target is a finding for bench/RESULTS.md, not a
flaky failure.  What is asserted is that every merge produced all the run's events.
"""

from __future__ import annotations

import os
import shutil

import pytest

from engine.benchmark import figures as F
from engine.benchmark.cpu import decompress_blocks, load_blocks
from engine.benchmark.isolate import run_isolated
from engine.benchmark.machine import cores
from engine.benchmark.paired import record, run_paired
from engine.benchmark.reencode import reencode_files
from engine.benchmark.storage import concatenate
from engine.merge import MergeSpec, merge_files, merge_run
from engine.units import parse_size

SIZE = parse_size(os.environ.get("TMBMERGE_BENCH_SIZE", "2GiB"))
FILES = int(os.environ.get("TMBMERGE_BENCH_FILES", "40"))
ROUNDS = int(os.environ.get("TMBMERGE_BENCH_ROUNDS", "3"))
JOBS = 2

pytestmark = pytest.mark.timeout(3600)
TARGETS = {t.name: t for t in F.TARGETS}


@pytest.fixture(scope="module")
def run(bench_run):
    return bench_run(SIZE, FILES)


def _emptied(folder):
    def cleanup():
        for entry in folder.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    return cleanup


def _copy(run, folder, *, streamed: bool = False):
    return lambda: concatenate(run.paths, folder / "copy.bin", streamed=streamed)


def _merge_one(run, folder, mode, reports):
    def merge():
        reports.append(
            merge_files(run.paths, folder / "merged.tmb", MergeSpec(mode=mode, threads=cores()))
        )

    return merge


def _merge_jobs(run, folder, mode, jobs, reports):
    def merge():
        report = merge_run(
            run.paths,
            folder / "outputs",
            target_size=int(run.bytes * 1.1 / jobs),
            spec=MergeSpec(mode=mode, threads=jobs),
            jobs=jobs,
        )
        assert not report.failures, report.failures
        reports.append(report)

    return merge


def _note(bench_ratios, request, ratios, **details):
    for name, r in ratios.items():
        target = TARGETS.get(name)
        bench_ratios.add(
            request.node.name,
            name,
            r["value"],
            target=f">= {target.minimum:g}" if target else None,
            met=r["met"],
            best=r["best"],
            **details,
        )


def test_copy_baseline(benchmark, run, bench_scratch):
    """The floor itself: read every input, write one file, fsync."""
    cleanup = _emptied(bench_scratch)

    # pedantic treats a value returned by setup as the call's arguments: return nothing
    def setup():
        cleanup()
        os.sync()

    result = benchmark.pedantic(_copy(run, bench_scratch), setup=setup, rounds=ROUNDS, iterations=1)
    assert result["bytes"] == run.bytes
    benchmark.extra_info.update(files=run.files, bytes=run.bytes, events=run.events)


@pytest.mark.parametrize("mode", ["fast", "safe"])
def test_merge_vs_copy(benchmark, run, bench_scratch, bench_ratios, request, mode):
    reports = []
    paired = run_paired(
        benchmark,
        _merge_one(run, bench_scratch, mode, reports),
        run.bytes,
        baselines={
            "copy": (_copy(run, bench_scratch), run.bytes),
            "copy_streamed": (_copy(run, bench_scratch, streamed=True), run.bytes),
        },
        rounds=ROUNDS,
        cleanup=_emptied(bench_scratch),
    )
    name = f"{mode}_vs_copy"
    ratios = record(
        benchmark,
        paired,
        targets={
            name: ("copy", TARGETS[name].minimum),
            f"{mode}_vs_streamed_copy": ("copy_streamed", None),
        },
    )
    _note(bench_ratios, request, ratios)
    assert all(r.event_count == run.events for r in reports)


def test_merge_deep(benchmark, run, bench_scratch, bench_ratios, request):
    blocks = load_blocks(run.paths)
    stored = sum(len(b.data) for b in blocks)
    reports = []
    paired = run_paired(
        benchmark,
        _merge_one(run, bench_scratch, "deep", reports),
        run.bytes,
        baselines={
            "reencode": (
                lambda: reencode_files(run.paths, bench_scratch / "reencoded.tmb"),
                run.bytes,
            ),
            "zstd_all_cores": (lambda: decompress_blocks(blocks, threads=cores()), stored),
        },
        rounds=ROUNDS,
        cleanup=_emptied(bench_scratch),
    )
    ratios = record(
        benchmark,
        paired,
        targets={
            "deep_vs_reencode": ("reencode", TARGETS["deep_vs_reencode"].minimum),
            "deep_vs_zstd_all_cores": ("zstd_all_cores", TARGETS["deep_vs_zstd_all_cores"].minimum),
        },
    )
    _note(bench_ratios, request, ratios)
    assert all(r.event_count == run.events for r in reports)


@pytest.mark.parametrize("mode", F.MODES)
def test_merge_run_jobs(benchmark, run, bench_scratch, bench_ratios, request, mode):
    reports, single = [], []
    paired = run_paired(
        benchmark,
        _merge_jobs(run, bench_scratch, mode, JOBS, reports),
        run.bytes,
        baselines={
            "copy": (_copy(run, bench_scratch), run.bytes),
            "jobs1": (_merge_one(run, bench_scratch, mode, single), run.bytes),
        },
        rounds=ROUNDS,
        cleanup=_emptied(bench_scratch),
    )
    ratios = record(
        benchmark,
        paired,
        targets={
            f"{mode}_jobs{JOBS}_vs_copy": ("copy", None),
            f"{mode}_jobs{JOBS}_vs_jobs1": ("jobs1", None),
        },
    )
    _note(bench_ratios, request, ratios)
    for report in reports:
        assert len(report.outputs) >= 2
        assert sum(o.event_count for o in report.outputs) == run.events


MEMORY_CASES = {
    "fast": {"task": "merge", "mode": "fast", "jobs": 1},
    "safe": {"task": "merge", "mode": "safe", "jobs": 1},
    "deep": {"task": "merge", "mode": "deep", "jobs": 1},
    f"safe_jobs{JOBS}": {"task": "merge", "mode": "safe", "jobs": JOBS},
    "reencode": {"task": "reencode"},
}


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_peak_rss(benchmark, run, bench_scratch, bench_ratios, request, case):
    """Each merge in a fresh process; its peak RSS from the kernel (wait4), the tree's by
    polling."""
    task = dict(
        MEMORY_CASES[case],
        inputs=[str(p) for p in run.paths],
        out_dir=str(bench_scratch / "out"),
        threads=cores() if MEMORY_CASES[case].get("jobs", 1) == 1 else JOBS,
    )

    def measure():
        (bench_scratch / "out").mkdir()
        try:
            return run_isolated(task, scratch=bench_scratch, poll_tree=task.get("jobs", 1) > 1)
        finally:
            shutil.rmtree(bench_scratch / "out")

    result = benchmark.pedantic(measure, setup=os.sync, rounds=1, iterations=1)
    peak_mb = result["peak_rss_bytes"] / 1e6
    benchmark.extra_info.update(
        {
            "peak_rss_MB": round(peak_mb, 1),
            "MB/s": round(result["bytes"] / result["seconds"] / 1e6, 1),
        }
    )
    if result.get("tree_peak_rss_bytes"):
        benchmark.extra_info["tree_peak_rss_MB"] = round(result["tree_peak_rss_bytes"] / 1e6, 1)
    limited = case in F.MODES
    bench_ratios.add(
        request.node.name,
        f"peak_rss_MB:{case}",
        peak_mb,
        target=f"< {F.PEAK_RSS_LIMIT / 1e6:.0f}" if limited else None,
        met=peak_mb * 1e6 < F.PEAK_RSS_LIMIT if limited else None,
    )
    if limited:
        assert result["peak_rss_bytes"] < F.PEAK_RSS_LIMIT, (
            f"{case} merge peaked at {peak_mb:.0f} MB"
        )
