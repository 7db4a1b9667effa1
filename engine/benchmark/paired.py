"""Paired timing for pytest-benchmark: a candidate and its baselines, alternated round by round.

A shared, noisy machine drifts; a ratio is only trustworthy if its two sides ran at nearly
the same moment.  ``run_paired`` hands ``benchmark.pedantic`` a setup that, before every round
of the candidate, cleans up, flushes writeback, and runs and times each baseline once (so the
order is B A B A ...); the candidate's own rounds are timed too.  The result holds every
round's seconds and the ratio of median rates, ``candidate / baseline`` (above 1: the candidate
is faster), plus the ratio of the best rounds, the same statistics ``tmbmerge bench`` reports;
``record`` puts it all in the benchmark's ``extra_info``.  Nothing here imports pytest:
``benchmark`` is duck-typed.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Side:
    """One side of a paired measurement: bytes moved per round and each round's seconds."""

    name: str
    nbytes: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median rate over rounds, bytes per second."""
        return statistics.median(self.nbytes / s for s in self.seconds)

    @property
    def best_rate(self) -> float:
        """Rate of the fastest round."""
        return self.nbytes / min(self.seconds)


@dataclass
class Paired:
    """A candidate measured in turn with its baselines, round by round."""

    candidate: Side
    baselines: dict[str, Side]

    def ratio(self, baseline: str) -> float:
        """The candidate's median rate over ``baseline``'s."""
        return self.candidate.rate / self.baselines[baseline].rate

    def best_ratio(self, baseline: str) -> float:
        """The candidate's best rate over ``baseline``'s best."""
        return self.candidate.best_rate / self.baselines[baseline].best_rate


def _timed(fn: Callable[[], object], into: list[float]) -> Callable[[], object]:
    def run():
        started = time.perf_counter()
        result = fn()
        into.append(time.perf_counter() - started)
        return result

    return run


def run_paired(
    benchmark,
    candidate: Callable[[], object],
    nbytes: int,
    *,
    baselines: dict[str, tuple[Callable[[], object], int]],
    rounds: int,
    cleanup: Callable[[], None] | None = None,
) -> Paired:
    """Benchmark ``candidate`` (``nbytes`` per call) with every baseline run just before each round.

    ``baselines`` maps a name to (callable, bytes per call); ``cleanup`` removes what a call wrote
    and runs outside every clock.
    """
    paired = Paired(
        Side("candidate", nbytes), {name: Side(name, n) for name, (_, n) in baselines.items()}
    )

    def settle():
        if cleanup is not None:
            cleanup()
        os.sync()

    def setup():
        for name, (fn, _) in baselines.items():
            settle()
            _timed(fn, paired.baselines[name].seconds)()
        settle()

    benchmark.pedantic(
        _timed(candidate, paired.candidate.seconds),
        setup=setup,
        rounds=rounds,
        iterations=1,
        warmup_rounds=0,
    )
    settle()
    return paired


def record(
    benchmark, paired: Paired, *, targets: dict[str, tuple[str, float | None]] | None = None
) -> dict:
    """Put rates, per-round seconds and ratios into ``benchmark.extra_info``; return the ratios.

    ``targets`` maps a ratio name to (baseline name, minimum or None).
    """
    info = benchmark.extra_info
    info["MB/s"] = round(paired.candidate.rate / 1e6, 1)
    info["seconds"] = [round(s, 4) for s in paired.candidate.seconds]
    for name, side in paired.baselines.items():
        info[f"{name} MB/s"] = round(side.rate / 1e6, 1)
        info[f"{name} seconds"] = [round(s, 4) for s in side.seconds]
    ratios = {}
    for ratio_name, (baseline, minimum) in (targets or {}).items():
        value, best = paired.ratio(baseline), paired.best_ratio(baseline)
        ratios[ratio_name] = {
            "value": value,
            "best": best,
            "baseline": baseline,
            "minimum": minimum,
            "met": None if minimum is None else value >= minimum,
        }
        info[f"ratio:{ratio_name}"] = round(value, 3)
        info[f"best_ratio:{ratio_name}"] = round(best, 3)
        if minimum is not None:
            info[f"target:{ratio_name}"] = f">= {minimum:g}"
            info[f"met:{ratio_name}"] = value >= minimum
    return ratios
