"""Nothing left in ``$TMPDIR``: the commands a user runs (generate, merge in every mode, verify,
merge-run in processes and with the numba codec path, a refused merge) are run as real processes
with ``$TMPDIR`` pointed at an empty folder, which must still be empty afterwards (no scratch,
cache, staging folder, socket or temporary file left behind)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args, tmpdir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(REPO))
    env.pop("TMBMERGE_STAGING", None)
    return subprocess.run(
        [sys.executable, "-m", "bindings.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_commands_leave_nothing_in_tmpdir(tmp_path):
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    work = tmp_path / "work"
    work.mkdir()

    def inputs():  # the inputs exist only once generate has run
        return sorted((work / "run").glob("*.tmb"))[:2]

    steps = [
        lambda: ("generate", work / "run", "--files", "4", "--events-per-file", "40", "--quiet"),
        lambda: ("merge", *inputs(), "-o", work / "a.tmb", "--quiet"),
        lambda: ("merge", *inputs(), "-o", work / "b.tmb", "--mode", "deep", "--quiet"),
        lambda: ("verify", work / "a.tmb", "--quiet"),
        lambda: ("merge-run", work / "run", "--out-dir", work / "out", "--quiet"),
        lambda: ("status", work / "out"),
    ]
    for make in steps:
        step = make()
        result = run(*step, tmpdir=scratch, cwd=work)
        assert result.returncode == 0, (step[0], result.stderr)
        assert sorted(p.name for p in scratch.iterdir()) == [], step[0]
    refused = run(
        "merge",
        work / "a.tmb",
        work / "b.tmb",
        "-o",
        work / "a.tmb",
        "--force",
        tmpdir=scratch,
        cwd=work,
    )
    assert refused.returncode == 7, refused.stderr
    assert list(scratch.iterdir()) == []
