"""``merge_run``: plan a run's (or many runs') merge and carry it out, resumably and in parallel.

Strategy: take the output folder's lock (one merge-run per folder), remove temporary files that
dead processes left behind, plan (``plan.plan_run``), and reconcile the plan with the journal:
an output already finished, whose file is still there as recorded, is not redone; an output
found published but not recorded (a kill between publishing and journaling) is checked and
adopted; everything else is (re)merged.  Tasks go to an executor (``executors``), several
outputs at once; the journal is written by this process only, as each task ends.  One output
failing does not stop the others; the report lists every failure.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import EngineError, OutputExists
from ..fsutil import remove_quietly, stale_temporaries
from ..progress import NullProgress, QueueProgress
from .executors import ProgressRelay, make_executor, worker_progress_queue
from .journal import FINISHED, Journal
from .lock import ExclusiveLock
from .pipeline import merge_files
from .plan import Plan, PlannedOutput, plan_run
from .report import MergeReport, RunReport
from .spec import DEFAULT_MAX_EVENTS, DEFAULT_TARGET_SIZE, MergeSpec

RUN_LOCK_NAME = "merge-run"


@dataclass(frozen=True)
class MergeTask:
    """Everything a worker needs to merge one output: plain, picklable data."""

    name: str
    output: str
    inputs: tuple[str, ...]
    spec: MergeSpec


def run_merge_task(task: MergeTask) -> MergeReport:
    """Merge one planned output (runs in a worker process, a Dask worker, or inline)."""
    queue = worker_progress_queue()
    progress = QueueProgress(queue, task.name) if queue is not None else _current_progress
    return merge_files(list(task.inputs), task.output, task.spec, progress=progress, label=task.name)


_current_progress = NullProgress()


class _RunLevelProgress(NullProgress):
    """In-process tasks report into the run's totals (their own start/finish are not shown)."""

    def __init__(self, parent):
        self.parent = parent

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        self.parent.advance(files=files, events=events, bytes=bytes)


def clean_stale_files(out_dir: Path) -> list[Path]:
    """Remove temporary outputs, staged sidecars and lock files left by processes that died."""
    removed = stale_temporaries(out_dir)
    for path in removed:
        remove_quietly(path)
    for entry in os.scandir(out_dir):
        if entry.name.startswith(".") and entry.name.endswith(".lock") and entry.name != f".{RUN_LOCK_NAME}.lock":
            target = Path(entry.path).with_name(entry.name[1:-len(".lock")])
            try:
                with ExclusiveLock(target):
                    pass            # taking and releasing it removes it
                removed.append(Path(entry.path))
            except EngineError:
                pass                # held by a live merge
    return removed


def merge_run(arguments, out_dir, *, run: int | None = None, target_size: int = DEFAULT_TARGET_SIZE,
              max_events: int = DEFAULT_MAX_EVENTS, spec: MergeSpec = MergeSpec(), jobs: int = 1,
              executor: str | None = None, progress=None, plan: Plan | None = None) -> RunReport:
    """Plan and merge; see the module docstring.  Returns a ``RunReport`` (failures listed in it)."""
    global _current_progress
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or NullProgress()
    report = RunReport(out_dir)
    with ExclusiveLock(out_dir / RUN_LOCK_NAME, what="output folder (another merge-run is using it)"):
        clean_stale_files(out_dir)
        plan = plan or plan_run(arguments, run=run, target_size=target_size, max_events=max_events,
                                skip_bad=spec.skip_bad)
        report.failures.extend({"file": path, **exc.to_dict()} for path, exc in plan.rejected)
        with Journal(out_dir) as journal:
            tasks = []
            for planned in plan.outputs:
                finished = _already_finished(journal, planned, out_dir, spec)
                if finished is not None:
                    report.outputs.append(finished)
                    continue
                journal.record_plan(planned.name, planned.run, planned.input_paths, spec.mode)
                tasks.append(planned)
            # spec.threads is the whole budget: outputs merged at once share it
            per_output = replace(spec, threads=max(1, spec.threads // max(1, min(jobs, len(tasks)))))
            tasks = [MergeTask(p.name, str(out_dir / p.name), tuple(p.input_paths), per_output) for p in tasks]
            planned_by_name = {p.name: p for p in plan.outputs}
            progress.start(label=f"merge-run {out_dir.name}",
                           files=sum(len(t.inputs) for t in tasks),
                           events=sum(planned_by_name[t.name].event_count for t in tasks),
                           bytes=sum(planned_by_name[t.name].file_size for t in tasks))
            relay = ProgressRelay(progress) if jobs > 1 and not executor else None
            chosen = make_executor(jobs, executor=executor, progress_queue=relay.queue if relay else None)
            _current_progress = _RunLevelProgress(progress)
            try:
                for task in tasks:
                    journal.set_state(task.name, "merging")
                for task, result, error in chosen.map_unordered(run_merge_task, tasks):
                    if error is not None:
                        journal.set_state(task.name, "failed", error=str(error))
                        report.failures.append({"output": task.name, **error.to_dict()})
                        continue
                    journal.set_state(task.name, "verified" if result.verified else "merged",
                                      file_size=result.file_size, checksum=result.checksum,
                                      event_count=result.event_count)
                    report.outputs.append(result)
            finally:
                _current_progress = NullProgress()
                if relay is not None:
                    relay.close()
                if hasattr(chosen, "close"):
                    chosen.close()
            progress.finish(label=f"{len(report.outputs)} outputs")
    report.outputs.sort(key=lambda o: o.output.name)
    report.seconds = time.perf_counter() - started
    return report


def _already_finished(journal: Journal, planned: PlannedOutput, out_dir: Path, spec: MergeSpec) -> MergeReport | None:
    """A report for an output that needs no work, or None when it must be (re)merged."""
    final = out_dir / planned.name
    if not final.exists():
        return None
    if spec.force:
        return None   # merge_files replaces it
    entry = journal.get(planned.name)
    if entry is not None and entry.state in FINISHED and entry.inputs == planned.input_paths \
            and final.stat().st_size == entry.file_size:
        return _report_from_file(final, planned, spec, entry.state)
    # Published but not journaled (killed in between), or made by someone else: adopt it only if it
    # is sound and holds exactly the planned inputs.
    adopted = _adopt(final, planned, spec)
    if adopted is None:
        raise OutputExists("exists but is not a finished output of this plan (use --force to redo it)",
                           path=final)
    journal.record_plan(planned.name, planned.run, planned.input_paths, spec.mode)
    journal.set_state(planned.name, "verified" if spec.checks_bookkeeping else "merged",
                      file_size=adopted.file_size, checksum=adopted.checksum, event_count=adopted.event_count)
    return adopted


def _adopt(final: Path, planned: PlannedOutput, spec: MergeSpec) -> MergeReport | None:
    from ..readers import open_file
    from ..verify import verify_file

    check = verify_file(final, metadata="auto")
    if not check.ok or check.metadata_checked != "sidecar":
        return None
    with open_file(final) as reader:
        merged_from = (reader.metadata.get("merge") or {}).get("inputs")
    if merged_from != [Path(p).name for p in planned.input_paths] or check.event_count != planned.event_count:
        return None
    return _report_from_file(final, planned, spec, "verified")


def _report_from_file(final: Path, planned: PlannedOutput, spec: MergeSpec, state: str) -> MergeReport:
    from ..checksums import parse_checksum
    from ..metadata import read_sidecar

    md = read_sidecar(final) or {}
    checksum = next((c for c in md.get("checksum", []) if c.startswith("adler32:")), None)
    return MergeReport(output=final, mode=spec.mode, file_size=final.stat().st_size,
                       adler32=parse_checksum(checksum) if checksum else 0,
                       event_count=md.get("event_count", planned.event_count), verified=state != "merged",
                       metadata=md, status=f"already {state}")

