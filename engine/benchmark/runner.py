"""``run_bench``: every figure of ``tmbmerge bench``, measured on one generated run, in one go.

Strategy: make a private folder under the directory being measured, generate a run there
(``dataset.make_run``), then measure in rounds.  Each round runs every measurement once, each
in a fresh interpreter (``isolate.run_isolated``: its own peak memory, nothing inherited), the
order reversed every other round so a baseline and the figures divided by it are measured next
to each other in time and slow drift of a shared machine cancels; pending writeback is flushed
(``os.sync``) before each one so no measurement pays for an earlier one's dirty pages.  A
figure's value is the median over rounds.  The folder is removed at the end, also when a
measurement fails or the process is interrupted (the running child is stopped first).

The result is the report dictionary that ``report.write_report`` stores as bench.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..host import iso_now, usable_cores
from . import figures as F
from .dataset import make_run
from .isolate import run_isolated
from .machine import describe_machine
from .report import REPORT_FORMAT

DEFAULT_SIZE = 2 << 30
QUICK_SIZE = 64 << 20
FILE_BYTES = 32 << 20  # about one input file per 32 MiB of run
MIN_FILES, MAX_FILES = 4, 40


@dataclass(frozen=True)
class BenchSettings:
    """What ``tmbmerge bench`` measures on: run size, folder, files, rounds, jobs."""

    size: int = DEFAULT_SIZE
    directory: str = tempfile.gettempdir()
    files: int | None = None  # default: one per 32 MiB, 4..40
    rounds: int | None = None  # default: 3, or 1 with quick
    quick: bool = False
    jobs: int | None = None  # processes for the all-core figures (default: all cores)
    sample_bytes: int | None = None  # stored bytes of blocks for the per-core codec figures

    def resolved(self) -> ResolvedSettings:
        """These settings with every default filled in for this machine."""
        cores = usable_cores()
        files = self.files or max(MIN_FILES, min(MAX_FILES, round(self.size / FILE_BYTES)))
        return ResolvedSettings(
            size=self.size,
            directory=os.path.realpath(self.directory),
            files=files,
            rounds=self.rounds or (1 if self.quick else 3),
            quick=self.quick,
            jobs=self.jobs or cores,
            sample_bytes=self.sample_bytes or min(self.size, (8 if self.quick else 64) << 20),
        )


@dataclass(frozen=True)
class ResolvedSettings:
    """``BenchSettings`` with every default worked out for this machine: what a run uses."""

    size: int
    directory: str
    files: int
    rounds: int
    quick: bool
    jobs: int
    sample_bytes: int


@dataclass(frozen=True)
class Step:
    """One measurement: the figure it produces and the task a worker process runs for it."""

    key: str  # the figure (or group of figures) it produces
    task: dict  # what the worker runs, without inputs/out_dir
    poll_tree: bool = False


Progress = Callable[[str, int, int], None]


def plan_steps(settings: ResolvedSettings) -> list[Step]:
    """One round's measurements, in the order of an even round."""
    jobs = settings.jobs
    steps = [
        Step("storage", {"task": "storage", "size": settings.size}),
        Step(F.STORAGE_COPY, {"task": "copy"}),
        Step(F.STORAGE_COPY_STREAMED, {"task": "copy", "streamed": True}),
    ]
    steps += [
        Step(F.merge_key(mode, 1), {"task": "merge", "mode": mode, "jobs": 1, "threads": jobs})
        for mode in F.MODES
    ]
    if jobs > 1:
        steps += [
            Step(
                F.merge_key(mode, jobs),
                {"task": "merge", "mode": mode, "jobs": jobs, "threads": jobs},
                poll_tree=True,
            )
            for mode in F.MODES
        ]
    steps += [
        Step(F.REENCODE, {"task": "reencode"}),
        Step(F.ZSTD_ALL_CORES, {"task": "zstd_all", "threads": jobs}),
        Step(
            "codecs",
            {
                "task": "codecs",
                "sample_bytes": settings.sample_bytes,
                "min_seconds": 0.1 if settings.quick else 0.3,
            },
        ),
    ]
    return steps


def run_bench(
    settings: BenchSettings, *, progress: Progress | None = None, command: str | None = None
) -> dict:
    """Measure everything (see the module docstring) and return the report dictionary."""
    resolved = settings.resolved()
    progress = progress or (lambda label, done, total: None)
    started = time.perf_counter()
    machine = describe_machine(resolved.directory)
    steps = plan_steps(resolved)
    total = 1 + resolved.rounds * len(steps)
    workdir = Path(tempfile.mkdtemp(prefix=".tmbmerge-bench-", dir=resolved.directory))
    samples: dict[str, list[dict]] = {}
    try:
        progress(
            f"generating a {resolved.size / 2**20:,.0f} MiB run in {resolved.files} files", 0, total
        )
        run = make_run(
            workdir / "run", size=resolved.size, files=resolved.files, jobs=resolved.jobs
        )
        done = 1
        for round_number in range(resolved.rounds):
            ordered = steps if round_number % 2 == 0 else list(reversed(steps))
            for step in ordered:
                progress(f"round {round_number + 1}/{resolved.rounds}: {step.key}", done, total)
                samples.setdefault(step.key, []).append(_measure(step, run.paths, workdir))
                done += 1
        progress("done", total, total)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": iso_now(),
        "command": command or " ".join(sys.argv),
        "settings": asdict(resolved),
        "machine": machine,
        "data": run.describe(),
        "figures": build_figures(samples, resolved.jobs),
    }
    report["ratios"] = build_ratios(report["figures"], resolved.jobs)
    report["memory"] = build_memory(report["figures"])
    report["machine"]["load_average_at_end"] = _load()
    report["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    return report


def _load():
    from .machine import load_average

    return load_average()


def _measure(step: Step, inputs, workdir: Path) -> dict:
    out_dir = workdir / "out"
    out_dir.mkdir()
    try:
        os.sync()  # earlier steps' dirty pages are flushed before this one's clock starts
        task = dict(step.task, inputs=[str(p) for p in inputs], out_dir=str(out_dir))
        return run_isolated(task, scratch=workdir, poll_tree=step.poll_tree)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


# -- from samples to figures -------------------------------------------------------------------


def _rate(sample: dict) -> float:
    return sample["bytes"] / sample["seconds"] if sample["seconds"] > 0 else 0.0


def summarize(key: str, samples: list[dict], description: str, *, unit: str = "B/s") -> dict:
    """A figure from its per-round samples: median rate, spread, and what it was measured on."""
    rates = [_rate(s) for s in samples]
    figure = {
        "value": statistics.median(rates),
        "unit": unit,
        "on": description,
        "baseline": F.baseline_of(key),
        "samples": rates,
        "min": min(rates),
        "max": max(rates),
        "rounds": len(rates),
        "seconds": [s["seconds"] for s in samples],
        "bytes": samples[-1]["bytes"],
    }
    for field in ("peak_rss_bytes", "tree_peak_rss_bytes"):
        values = [s[field] for s in samples if s.get(field) is not None]
        if values:
            figure[field] = max(values)
    warmups = [s["warmup_seconds"] for s in samples if s.get("warmup_seconds")]
    if warmups:
        figure["warmup_seconds"] = max(warmups)  # before the clock: see tasks._warm_kernels
    resident = [s["input_resident"] for s in samples if s.get("input_resident") is not None]
    if resident:
        figure["input_resident"] = min(resident)
    for field in (
        "output_bytes",
        "outputs",
        "events",
        "jobs",
        "threads",
        "uncompressed_bytes",
        "blocks",
        "level",
        "sample_bytes",
        "sample_blocks",
    ):
        if field in samples[-1]:
            figure[field] = samples[-1][field]
    return figure


def build_figures(samples: dict[str, list[dict]], jobs: int) -> dict[str, dict]:
    """The report's figures from the samples of every round."""
    figures: dict[str, dict] = {}
    storage = samples.get("storage", [])
    if storage:
        figures[F.STORAGE_WRITE] = summarize(
            F.STORAGE_WRITE, [s["write"] for s in storage], F.DESCRIPTIONS[F.STORAGE_WRITE]
        )
        reads = [s["read_cold"] for s in storage]
        read = summarize(F.STORAGE_READ, reads, F.DESCRIPTIONS[F.STORAGE_READ])
        read["cache_state"] = "cold" if all(r["cold"] for r in reads) else "page-cache"
        read["eviction"] = reads[-1]["method"]
        read["resident_fraction_before"] = max((r["resident_fraction"] or 0.0) for r in reads)
        figures[F.STORAGE_READ] = read
        figures[F.STORAGE_READ_CACHED] = summarize(
            F.STORAGE_READ_CACHED,
            [s["read_cached"] for s in storage],
            F.DESCRIPTIONS[F.STORAGE_READ_CACHED],
        )
    for key in (F.STORAGE_COPY, F.STORAGE_COPY_STREAMED, F.REENCODE, F.ZSTD_ALL_CORES):
        if key in samples:
            figures[key] = summarize(key, samples[key], F.DESCRIPTIONS[key].format(cores=jobs))
    for mode in F.MODES:
        for n in sorted({1, jobs}):
            key = F.merge_key(mode, n)
            if key in samples:
                figures[key] = summarize(key, samples[key], F.merge_description(mode, n))
    codecs = samples.get("codecs", [])
    for key, name in (
        (F.XXH3, "xxh3"),
        (F.ADLER_NG, "adler32_zlib_ng"),
        (F.ADLER_ZLIB, "adler32_zlib"),
        (F.ZSTD_COMPRESS, "zstd_compress"),
        (F.ZSTD_DECOMPRESS, "zstd_decompress"),
    ):
        if codecs:
            figures[key] = summarize(key, [c[name] for c in codecs], F.DESCRIPTIONS[key])
    for figure in figures.values():
        base = figure["baseline"]
        figure["ratio"] = (
            figure["value"] / figures[base]["value"]
            if base in figures and figures[base]["value"]
            else None
        )
    return figures


def ratio_of(
    figures: dict, figure: str, baseline: str, *, statistic: str = "value"
) -> float | None:
    """``figure / baseline`` of their medians (``value``) or of their best rounds (``max``)."""
    if figure in figures and baseline in figures and figures[baseline][statistic]:
        return figures[figure][statistic] / figures[baseline][statistic]
    return None


def _ratio_entry(figure: str, baseline: str, figures: dict, **rest) -> dict:
    return {
        "figure": figure,
        "baseline": baseline,
        "value": ratio_of(figures, figure, baseline),
        "best": ratio_of(figures, figure, baseline, statistic="max"),
        **rest,
    }


def build_ratios(figures: dict, jobs: int) -> dict[str, dict]:
    """The issue's targets, then informational ratios (all-core merges vs copy and vs one job).

    ``value`` divides medians (the verdict ``met`` is on it); ``best`` divides the best rounds,
    the steadier statistic when other work on the machine slows some rounds down.
    """
    ratios = {}
    for target in F.TARGETS:
        value = ratio_of(figures, target.figure, target.baseline)
        ratios[target.name] = _ratio_entry(
            target.figure,
            target.baseline,
            figures,
            target=f">= {target.minimum:g}",
            met=target.met(value),
            says=target.says,
        )
    for mode in ("fast", "safe"):
        ratios[f"{mode}_vs_streamed_copy"] = _ratio_entry(
            F.merge_key(mode, 1),
            F.STORAGE_COPY_STREAMED,
            figures,
            target=None,
            met=None,
            says=f"{mode} merge vs the copy written the way merges write (what the checks cost)",
        )
    if jobs > 1:
        for mode in F.MODES:
            key = F.merge_key(mode, jobs)
            ratios[f"{mode}_jobs{jobs}_vs_copy"] = _ratio_entry(
                key,
                F.STORAGE_COPY,
                figures,
                target=None,
                met=None,
                says=f"{mode} merge on {jobs} processes vs the plain copy",
            )
            ratios[f"{mode}_jobs{jobs}_vs_jobs1"] = _ratio_entry(
                key,
                F.merge_key(mode, 1),
                figures,
                target=None,
                met=None,
                says=f"{mode} merge: {jobs} processes vs 1",
            )
    return ratios


def build_memory(figures: dict) -> dict[str, dict]:
    """Peak resident memory of every merge and of the copyd0om comparison, with the issue's
    limit."""
    memory = {}
    for key, figure in figures.items():
        if not (key.startswith("merge.") or key == F.REENCODE) or "peak_rss_bytes" not in figure:
            continue
        limited = key.startswith("merge.") and key.endswith(".jobs1")
        memory[key] = {
            "peak_rss_bytes": figure["peak_rss_bytes"],
            "tree_peak_rss_bytes": figure.get("tree_peak_rss_bytes"),
            "limit_bytes": F.PEAK_RSS_LIMIT if limited else None,
            "met": figure["peak_rss_bytes"] < F.PEAK_RSS_LIMIT if limited else None,
        }
    return memory
