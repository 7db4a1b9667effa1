"""Run one measurement in a fresh interpreter and read its peak memory from the kernel.

Strategy: the task goes to ``python -m engine.benchmark.worker`` as JSON; its stdout and
stderr go to files (no pipe can fill up and stall it).  Peak memory is the kernel's high-water
mark of resident memory (``VmHWM`` in ``/proc/PID/status``) of the new program's own address
space: the worker reads its own when its task ends.  ``ru_maxrss`` (``getrusage``/``wait4``)
is *not* used: Linux carries the parent's resident size at fork/vfork over the ``exec`` into
the child's ``ru_maxrss``, so a small merge started from a 300 MB test process would be charged
300 MB.  For tasks with worker processes (``merge_run``), the parent polls the process tree:
the largest ``VmHWM`` of any descendant (the high-water mark only grows, so the last reading is
at most one poll late; a task may also hand in what its workers reported) and the largest sum of
resident sizes seen at once (``tree_peak_rss_bytes``, what a server must hold).  If the parent is
interrupted, the child is terminated and reaped before the exception goes on.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EngineError
from ..host import peak_rss_bytes

POLL_SECONDS = 0.05


class MeasurementFailed(EngineError):
    """A benchmark measurement's process failed; its last lines of output say why."""


def run_isolated(task: dict, *, scratch, poll_tree: bool = False) -> dict:
    """Run ``task`` in a new interpreter; its result plus ``peak_rss_bytes`` (and the tree's, if
    asked)."""
    scratch = Path(scratch)
    stem = scratch / f".bench-{task['task']}-{secrets.token_hex(4)}"
    out_path, err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
    command = [sys.executable, "-m", "engine.benchmark.worker", json.dumps(task)]
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            status, usage, tree = _reap(proc, poll_tree)
        except BaseException:
            _stop(proc)
            raise
        wall = time.perf_counter() - started
        if status != 0:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise MeasurementFailed(
                f"benchmark task {task['task']} exited with {status}: " + " | ".join(tail)
            )
        lines = out_path.read_text().strip().splitlines()
        if not lines:
            raise MeasurementFailed(f"benchmark task {task['task']} printed no result")
        result = json.loads(lines[-1])
    finally:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    own = result.pop("self_peak_rss_bytes", None)
    if own is None:  # no /proc: the kernel's figure, which may include the parent (see above)
        own = usage.ru_maxrss * 1024
    # a worker that lived less than a poll is still counted by what it reported itself (its
    # ru_maxrss: an upper bound that includes its parent's size when it was spawned)
    result["peak_rss_bytes"] = max(own, tree.worker_peak, result.pop("reported_peak_rss_bytes", 0))
    result["tree_peak_rss_bytes"] = tree.sum_peak if poll_tree else None
    result["process_seconds"] = wall
    return result


class TreePeaks:
    """What polling a process tree saw: the largest sum of RSS, the largest descendant VmHWM."""

    def __init__(self):
        self.sum_peak = 0
        self.worker_peak = 0

    def sample(self, pid: int) -> None:
        """Add one sample of the memory of process ``pid`` and its children."""
        import psutil

        try:
            root = psutil.Process(pid)
            members = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                continue
            if member.pid != pid:
                self.worker_peak = max(self.worker_peak, peak_rss_bytes(member.pid) or 0)
        self.sum_peak = max(self.sum_peak, total)


def _reap(proc: subprocess.Popen, poll_tree: bool):
    tree = TreePeaks()
    if poll_tree:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree.sample(proc.pid)
            time.sleep(POLL_SECONDS)
    else:
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, tree


def _stop(proc: subprocess.Popen) -> None:
    if proc.returncode is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass
