"""Interrupting ``tmbmerge merge`` (SIGINT, SIGTERM) leaves nothing behind and exits with 130.

The merge runs as a real process on a ~25 MB run (deep mode on one thread, so it lasts a second
or two).  The test waits until the temporary ``.<name>.tmbpart-*`` output appears, signals the
process, and then requires exit code 130, no output, no sidecar, no temporary or lock file, and
unchanged inputs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from merge_helpers import wait_for

from engine.fsutil import parse_temporary_name
from engine.metadata import sidecar_path

DEADLINE = 60.0
pytestmark = pytest.mark.timeout(
    120
)  # an interruption that hangs fails here, not at the global limit


def _interrupt_while_writing(args, out_dir, signum, *, output=None) -> tuple[int, str]:
    """Run ``tmbmerge ARGS --quiet``; as soon as a temporary output (of ``output``, or any) is
    in ``out_dir``, send ``signum``.  Returns the exit code and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bindings.cli", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def temporary_present():
            if process.poll() is not None:
                raise AssertionError(
                    f"{args[0]} ended before it could be interrupted: {process.returncode}, "
                    f"{process.stderr.read()}"
                )
            names = (
                [parse_temporary_name(n) for n in os.listdir(out_dir)] if out_dir.is_dir() else []
            )
            return [n for n in names if n is not None and output in (None, n[0])]

        wait_for(temporary_present, what="a temporary output")
        process.send_signal(signum)
        _, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("mode", ["safe", "deep"])
def test_interrupted_merge_leaves_nothing(
    signum, mode, tmb_big_run, tmp_path, leftovers, sha256_of
):
    inputs = sorted(tmb_big_run.glob("*.tmb"))
    before = {p: sha256_of(p) for p in inputs}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "merged.tmb"
    # safe mode reads and writes everything once, reading the output back as it goes: a few
    # tenths of a second here, so it is interrupted as soon as it has started writing; deep mode
    # lasts longer.
    returncode, err = _interrupt_while_writing(
        ["merge", *map(str, inputs), "-o", str(out), "--mode", mode, "--jobs", "1"],
        out_dir,
        signum,
        output=out.name,
    )
    assert returncode == 130, err
    assert "interrupted" in err
    assert not out.exists() and not sidecar_path(out).exists()
    assert leftovers(out_dir) == []
    assert os.listdir(out_dir) == []
    assert {p: sha256_of(p) for p in inputs} == before


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_merge_run_stops(signum, jobs, tmb_big_run, tmp_path, leftovers):
    """A signal while the first outputs are being merged stops the whole run (not only the output
    being merged), inline (``--jobs 1``) or in worker processes (``--jobs 2``)."""
    out_dir = tmp_path / "out"
    total = sum(p.stat().st_size for p in tmb_big_run.glob("*.tmb"))
    returncode, err = _interrupt_while_writing(
        [
            "merge-run",
            str(tmb_big_run),
            "--out-dir",
            str(out_dir),
            "--target-size",
            str(total // 4),
            "--jobs",
            str(jobs),
            "--mode",
            "deep",
        ],
        out_dir,
        signum,
    )
    assert returncode == 130, err
    published = sorted(p.name for p in out_dir.glob("*.tmb"))
    assert published == [], f"outputs merged after the signal: {published}"
    assert leftovers(out_dir) == []


def test_interruption_is_not_a_bad_input(monkeypatch, tmb_run, tmp_path, leftovers):
    """With --skip-bad, bad inputs are left out and the merge goes on; an interruption (SIGTERM is
    turned into ``Interrupted`` by the command line) arriving while an input is opened must still
    stop the merge, not be mistaken for a bad input."""
    from engine.errors import Interrupted
    from engine.merge import MergeSpec, merge_files
    from engine.merge import inputs as inputs_module

    real_open = inputs_module.open_file

    def open_file(path):
        if path == tmb_run[1]:
            raise Interrupted("interrupted by SIGTERM")
        return real_open(path)

    monkeypatch.setattr(inputs_module, "open_file", open_file)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tmb"
    with pytest.raises(Interrupted):
        merge_files(tmb_run[:3], out, MergeSpec(skip_bad=True))
    assert not out.exists() and not sidecar_path(out).exists()
    assert leftovers(out_dir) == []


def test_a_stop_whose_exception_was_lost_still_stops_the_merge(tmb_run, tmp_path, leftovers):
    """A signal's ``Interrupted`` raised inside a ``__del__`` (a reader collected mid-merge) is
    lost by Python; the request it recorded stops the merge at the next block all the same, and
    the CLI's unraisable hook prints nothing about the lost exception."""
    import gc

    from bindings.cli import _unraisable
    from engine import interrupts
    from engine.errors import Interrupted
    from engine.merge import MergeSpec, merge_files

    class Collected:
        def __del__(self):
            raise Interrupted("interrupted by SIGTERM")

    seen = []
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(seen.append)
    try:
        Collected()  # the exception is lost: the unraisable hook gets it, not the merge
        gc.collect()
        interrupts.request_stop(signal.SIGTERM)  # what the CLI's handler records first
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        out = out_dir / "m.tmb"
        with pytest.raises(Interrupted, match="SIGTERM"):
            merge_files(tmb_run[:3], out, MergeSpec())
    finally:
        sys.unraisablehook = hook
        interrupts.clear()
    assert seen == []  # silent about the interruption, would report any other unraisable error
    assert not out.exists() and not sidecar_path(out).exists()
    assert leftovers(out_dir) == []
    merge_files(tmb_run[:3], out, MergeSpec())  # cleared: the next merge runs
    assert out.exists()
