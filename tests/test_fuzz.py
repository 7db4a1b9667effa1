"""The fuzzer in the default suite: a short run, and every crasher it ever found replayed.

``tests/fuzz`` (see its ``__init__``) mutates sound files structure by structure, recomputing
every digest, and holds each result to issue 10's oracle.  Here it runs for ``FUZZ_SECONDS``
with a fixed seed (``TMB_FUZZ_SEED`` to vary it), so the suite is deterministic; the long run is
``python -m tests.fuzz --seconds 600``.  Per-file time is left out of the oracle here (shared,
noisy machines: no timing assertions in tests); a hang still fails, by the watchdog.  Each
folder under ``tests/data/fuzz/`` is a file that once broke the oracle (found by the fuzzer
against the code before issue 10's fixes; its ``problem.txt`` says how) and must hold now.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzz.run import CRASH_DIR, fuzz, make_seeds, replay

FUZZ_SECONDS = float(os.environ.get("TMB_FUZZ_SECONDS", 45))
CRASHERS = sorted(p for p in CRASH_DIR.iterdir() if p.is_dir()) if CRASH_DIR.is_dir() else []


def test_short_fuzzing_run_finds_nothing(tmp_path):
    seed = int(os.environ.get("TMB_FUZZ_SEED", 1))
    summary = fuzz(
        seconds=FUZZ_SECONDS, seed=seed, crash_dir=tmp_path / "crashes", max_seconds=None
    )
    assert summary.files >= 20, summary.line()
    assert summary.refused > 0 and summary.refused < summary.files, (
        summary.line()
    )  # it reaches both verdicts
    assert summary.crashes == [], "\n".join(f"{c['case']}: {c['problem']}" for c in summary.crashes)


@pytest.fixture(scope="module")
def companion(tmp_path_factory):
    _, companion = make_seeds(tmp_path_factory.mktemp("seeds"))
    return companion


def test_crashers_are_kept():
    assert len(CRASHERS) >= 20


@pytest.mark.parametrize("folder", CRASHERS, ids=[p.name[:60] for p in CRASHERS])
def test_crasher_holds_now(folder: Path, companion, tmp_path):
    assert replay(folder, tmp_path, companion) is None, (folder / "problem.txt").read_text()
