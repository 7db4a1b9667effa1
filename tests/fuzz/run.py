"""The fuzzing loop: seeds, mutation, the oracle, time and memory per file, crashers kept.

``fuzz(seconds=..., seed=...)`` generates a few small sound seed files (zstd and ``none``
blocks, with sidecars), then until the time is up: picks a seed, dissects it, applies one to
three mutations (``mutations.mutate``), writes the file and its sidecar, and runs the oracle
(``oracle.check_case``) under a watchdog.  Each file is reproducible from ``(seed, number)``.
A file breaks the oracle if the oracle says so, if a non-EngineError escapes, if it takes over
``MAX_SECONDS``, or if the process's peak RSS grows past ``MEMORY_SLACK`` plus twice the
largest block the file's headers declare (at most ``MAX_BLOCK_BYTES``): issue 10's bound.  Such
a file and its sidecar are kept in a folder of ``crash_dir`` (``tests/data/fuzz/`` by
default) named after the seed, the file number and the mutations, for ``tests/test_fuzz.py``
to replay for ever after (``replay``).
"""

from __future__ import annotations

import json
import resource
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.format import BLOCK_HEADER_SIZE, MAX_BLOCK_BYTES

from .forge import dissect
from .mutations import Case, mutate, render
from .oracle import Crash, check_case

MAX_SECONDS = 10.0
MEMORY_SLACK = 64 << 20
WATCHDOG_SECONDS = 60
CRASH_DIR = Path(__file__).resolve().parent.parent / "data" / "fuzz"
SEED_RUN = 178500


@dataclass
class Summary:
    files: int = 0
    crashes: list[dict] = field(default_factory=list)
    slowest_seconds: float = 0.0
    slowest_case: str = ""
    peak_rss_bytes: int = 0
    baseline_rss_bytes: int = 0
    refused: int = 0  # files verify --deep refused (the mutation reached a check)
    mutations: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        return (
            f"{self.files} files in {self.seconds:.0f} s ({self.refused} refused by verify "
            f"--deep, {self.files - self.refused} sound), {len(self.crashes)} crashes, slowest "
            f"file {self.slowest_seconds:.2f} s ({self.slowest_case}), peak RSS "
            f"{self.peak_rss_bytes / 1e6:.0f} MB (baseline after warm-up "
            f"{self.baseline_rss_bytes / 1e6:.0f} MB)"
        )


def make_seeds(folder: Path) -> tuple[list[Path], Path]:
    """Small sound files of one run (zstd and none blocks, with sidecars), and a companion."""
    from engine.generate import generate_file

    folder.mkdir(parents=True, exist_ok=True)
    seeds = []
    for partition, codec, n_events in ((1, "zstd", 24), (2, "none", 12), (3, "zstd", 3)):
        made = generate_file(
            folder / f"tmb_{SEED_RUN:010d}_p{partition:03d}.tmb",
            run=SEED_RUN,
            partition=partition,
            first_event=1000 * partition,
            n_events=n_events,
            seed=partition,
            mean_event_kb=0.3,
            codec=codec,
            fsync=False,
            block_bytes=1500,
        )
        seeds.append(Path(made.path))
    companion = Path(
        generate_file(
            folder / f"tmb_{SEED_RUN:010d}_p009.tmb",
            run=SEED_RUN,
            partition=9,
            first_event=10**9,
            n_events=8,
            seed=9,
            mean_event_kb=0.3,
            fsync=False,
            block_bytes=1500,
        ).path
    )
    return seeds, companion


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Watchdog(Exception):
    pass


def _alarm(signum, frame):
    raise _Watchdog(f"no answer after {WATCHDOG_SECONDS} s")


def declared_block_bytes(data: bytes) -> int:
    """The largest uncompressed length any block header in ``data`` could declare (bounded)."""
    largest = 0
    at = data.find(b"TMBK")
    while at >= 0:
        if at + BLOCK_HEADER_SIZE <= len(data):
            largest = max(
                largest, min(int.from_bytes(data[at + 12 : at + 16], "little"), MAX_BLOCK_BYTES)
            )
        at = data.find(b"TMBK", at + 1)
    return largest


def run_one(
    path: Path,
    data: bytes,
    sidecar: bytes | None,
    companion: Path,
    workdir: Path,
    *,
    max_seconds: float | None = MAX_SECONDS,
) -> tuple[str | None, bool, float]:
    """Write the case, run the oracle under a watchdog; (problem or None, refused, seconds).
    ``max_seconds=None``: only a hang (the watchdog) counts, not slowness."""
    from engine.metadata import sidecar_path

    path.write_bytes(data)
    side = sidecar_path(path)
    side.unlink(missing_ok=True)
    if sidecar is not None:
        side.write_bytes(sidecar)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG_SECONDS)
    started = time.perf_counter()
    refused = True
    try:
        problem, refused = check_case(path, companion, workdir)
    except Crash as exc:
        problem = f"crash: {exc}"
    except _Watchdog as exc:
        problem = f"hang: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - started
    if problem is None and max_seconds is not None and seconds > max_seconds:
        problem = f"slow: {seconds:.1f} s (at most {max_seconds:.0f} s per file)"
    return problem, refused, seconds


def keep_crasher(
    crash_dir: Path, label: str, name: str, data: bytes, sidecar: bytes | None, problem: str
) -> Path:
    """Keep a crasher as ``crash_dir/label/``: the file under its own name (its sidecar names it),
    its sidecar, and ``problem.txt`` (what broke, first line)."""
    folder = crash_dir / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    if sidecar is not None:
        (folder / f"{name}.json").write_bytes(sidecar)
    (folder / "problem.txt").write_text(problem.splitlines()[0][:500] + "\n")
    return folder


def replay(folder: Path, workdir: Path, companion: Path) -> str | None:
    """Run a kept crasher through the oracle again: None when it now holds."""
    path = next(p for p in folder.iterdir() if p.suffix == ".tmb")
    sidecar = path.with_name(path.name + ".json")
    problem, _, _ = run_one(
        workdir / path.name,
        path.read_bytes(),
        sidecar.read_bytes() if sidecar.exists() else None,
        companion,
        workdir,
        max_seconds=None,
    )
    return problem


def fuzz(
    *,
    seconds: float,
    seed: int = 0,
    crash_dir: Path | None = CRASH_DIR,
    log=None,
    max_files: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
) -> Summary:
    """Fuzz for ``seconds``; see the module docstring.  ``max_seconds=None`` leaves per-file time
    out of the oracle (the test suite runs on shared, noisy machines: only hangs count there)."""
    summary = Summary()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tmb-fuzz-") as tmp:
        tmp = Path(tmp)
        seeds, companion = make_seeds(tmp / "seeds")
        parts = [dissect(s) for s in seeds]
        sidecars = [json.loads(Path(f"{s}.json").read_text()) for s in seeds]
        work = tmp / "work"
        work.mkdir()
        # warm up (numba, zstd, imports) on a sound file, so the baseline is what a run costs
        run_one(
            work / seeds[0].name,
            seeds[0].read_bytes(),
            Path(f"{seeds[0]}.json").read_bytes(),
            companion,
            work,
        )
        summary.baseline_rss_bytes = _peak_rss()
        number = 0
        while time.perf_counter() - started < seconds and (max_files is None or number < max_files):
            rng = np.random.default_rng([seed, number])
            which = int(rng.integers(len(seeds)))
            case = mutate(Case(parts[which].copy(), dict(sidecars[which])), rng)
            data, sidecar = render(case)
            name = seeds[which].name  # the sidecar names the file: keep the seed's name
            before = _peak_rss()
            problem, refused, took = run_one(
                work / name, data, sidecar, companion, work, max_seconds=max_seconds
            )
            after = _peak_rss()
            bound = (
                max(before, summary.baseline_rss_bytes)
                + MEMORY_SLACK
                + 2 * declared_block_bytes(data)
            )
            if problem is None and after > bound:
                problem = f"memory: peak RSS {after / 1e6:.0f} MB, bound {bound / 1e6:.0f} MB"
            summary.files += 1
            for applied in case.applied:
                summary.mutations[applied] = summary.mutations.get(applied, 0) + 1
            if took > summary.slowest_seconds:
                summary.slowest_seconds, summary.slowest_case = (
                    took,
                    f"seed {seed} file {number}: {case.applied}",
                )
            if problem is not None:
                label = f"s{seed}-n{number}-{'-'.join(case.applied)}"[:120]
                entry = {"case": label, "problem": problem, "mutations": case.applied}
                if crash_dir is not None:
                    entry["kept"] = str(
                        keep_crasher(crash_dir, label, name, data, sidecar, problem)
                    )
                summary.crashes.append(entry)
                if log:
                    log(f"PROBLEM {label}: {problem}")
            elif refused:
                summary.refused += 1
            number += 1
            if log and number % 500 == 0:
                summary.seconds = time.perf_counter() - started
                summary.peak_rss_bytes = _peak_rss()
                log(summary.line())
    summary.seconds = time.perf_counter() - started
    summary.peak_rss_bytes = _peak_rss()
    return summary
