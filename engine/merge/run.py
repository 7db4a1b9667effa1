"""``merge_run``: plan a run's (or many runs') merge and carry it out, resumably and in parallel.

Strategy: take the output folder's lock (one merge-run per folder) and remove temporary files
that dead processes left behind.  Then the journal comes first: a rerun whose plan options
(``run``, ``target_size``, ``max_events``) differ from the journal's is refused unless ``replan`` is
asked; an output it records as finished, whose file is still there as recorded, stands (and its
inputs, perhaps retired already, are not planned again); an output found published but not
recorded as finished (a kill between the two) is verified and adopted; unfinished entries are
forgotten.  Only the remaining inputs are planned (``plan.plan_run``), never this merge-run's own
outputs nor any merged file, so a rerun never remakes or renames what is done.  Tasks go to an
executor (``executors``), several outputs at once; a worker opens each input only while it is
still the file planned (st_dev, st_ino, size, mtime as journaled), else that output fails
(``InputChanged``) and nothing of it is published.  This process alone writes the journal, and
declares and retires (``AfterVerified``) as each output is verified, in that order; an output
finished by an earlier merge-run is re-verified before anything is done with it, and retirement
is earned as ``retire.check_retirable`` says.  One output failing does not stop the others;
the report lists every failure.  An interruption says which outputs were published.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import (
    EngineError,
    IncompleteRun,
    InconsistentInputs,
    Interrupted,
    OutputExists,
    ParameterError,
    UsageError,
    output_error,
)
from ..fsutil import remove_quietly, remove_stale_temporaries
from ..interrupts import raise_if_stopped
from ..metadata import sidecar_path
from ..progress import NullProgress, QueueProgress
from ..remote import RemotePath, is_url, location
from ..units import plural
from .after_verified import AfterVerified
from .catalog import names_by_run, open_merge_catalog
from .executors import ProgressRelay, make_executor, worker_progress_queue
from .journal import FINISHED, Journal, JournalEntry, JournalState
from .lock import ExclusiveLock
from .pipeline import merge_files
from .plan import PlannedOutput, discover_inputs, plan_run, resolved_name
from .report import MergeReport, RunReport
from .spec import DEFAULT_MAX_EVENTS, DEFAULT_TARGET_SIZE, MergeSpec

RUN_LOCK_NAME = "merge-run"
RUN_LOCK_WHAT = "output folder (another merge-run is using it)"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeTask:
    """Everything a worker needs to merge one output: plain, picklable data."""

    name: str
    output: str
    inputs: tuple[str, ...]
    spec: MergeSpec
    records: Any = None  # the inputs' catalogue records (catalog.RecordLookup), fetched by the run
    identities: tuple[
        dict, ...
    ] = ()  # each input as planned (PlannedInput.identity): re-checked on opening


def run_merge_task(task: MergeTask) -> MergeReport:
    """Merge one planned output (runs in a worker process, a Dask worker, or inline)."""
    queue = worker_progress_queue()
    progress = QueueProgress(queue, task.name) if queue is not None else _current_progress
    return merge_files(
        list(task.inputs),
        task.output,
        task.spec,
        progress=progress,
        label=task.name,
        records=task.records,
        catalog_checked=task.records is not None,
        planned={identity["path"]: identity for identity in task.identities} or None,
    )


_current_progress = NullProgress()


class _RunLevelProgress(NullProgress):
    """In-process tasks report into the merge-run's totals (their own start and finish are not
    shown)."""

    def __init__(self, parent):
        self.parent = parent

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        self.parent.advance(files=files, events=events, bytes=bytes)


def journal_folder(out_dir, journals=None) -> Path:
    """Where a merge-run into ``out_dir`` keeps its journal and lock: the folder itself, or for
    remote storage a local folder named after the URL under ``journals`` (``--journal DIR``),
    else under ``$XDG_STATE_HOME/tmbmerge/runs`` (``engine.remote.journals_dir``), where a rerun
    after a reboot finds it."""
    dest = location(out_dir)
    if not is_url(dest):
        if journals is not None:
            raise UsageError(
                "a journal folder is for a remote output folder only: a local output folder "
                "keeps its journal in itself",
                path=journals,
            )
        return dest
    from ..remote import journals_dir

    base = Path(journals) if journals is not None else journals_dir()
    return base / re.sub(r"[^A-Za-z0-9._-]+", "_", str(dest).rstrip("/"))


def clean_stale_files(out_dir: Path) -> list[Path]:
    """Remove temporary outputs, staged sidecars and lock files left by processes that died."""
    removed = remove_stale_temporaries(out_dir)
    for path in removed:
        log.info("removed %s, left by a merge that did not finish", path)
    for entry in os.scandir(out_dir):
        if (
            entry.name.startswith(".")
            and entry.name.endswith(".lock")
            and entry.name != f".{RUN_LOCK_NAME}.lock"
        ):
            target = Path(entry.path).with_name(entry.name[1 : -len(".lock")])
            try:
                with ExclusiveLock(target):
                    pass  # taking and releasing it removes it
                removed.append(Path(entry.path))
            except EngineError:
                pass  # held by a live merge
    return removed


def merge_run(
    arguments,
    out_dir,
    *,
    run: int | None = None,
    target_size: int = DEFAULT_TARGET_SIZE,
    max_events: int = DEFAULT_MAX_EVENTS,
    spec: MergeSpec = MergeSpec(),
    jobs: int = 1,
    executor: str | None = None,
    progress=None,
    retire: str | None = None,
    retire_dir=None,
    replan: bool = False,
    on_output: Callable[[MergeReport], None] | None = None,
    on_failure: Callable[[dict], None] | None = None,
    journals=None,
) -> RunReport:
    """Plan and merge; see the module docstring.  Returns a ``RunReport`` (failures listed in it).

    With ``spec.declare`` each verified output is declared (in this process, in order); with
    ``retire`` ("move" or "delete") the inputs of each declared output are then retired.
    ``replan`` lets a rerun plan the unfinished inputs with other options than the journal's.
    ``on_output(report)`` is called with each output as soon as it is published, declared and
    retired as asked (or found finished by an earlier merge-run), ``on_failure(entry)`` with
    each failure as it happens: a caller can stream them instead of waiting for the whole
    merge-run.  ``journals``: where a remote ``out_dir``'s journal goes (``journal_folder``).
    """
    if retire and not (spec.declare and spec.verifies):
        raise ParameterError(
            "retire needs verified, declared outputs: a spec with catalog, declare and mode "
            "safe or deep",
            parameters=("retire", "catalog", "declare", "mode"),
        )
    dest = location(out_dir)  # where outputs go; out_dir: where the journal and lock live
    out_dir = _made(journal_folder(dest, journals))
    report = RunReport(dest)
    try:
        return _merge_run(
            arguments,
            out_dir,
            report,
            settings={"run": run, "target_size": target_size, "max_events": max_events},
            spec=spec,
            jobs=jobs,
            executor=executor,
            progress=progress or NullProgress(),
            retire=retire,
            retire_dir=retire_dir,
            replan=replan,
            stream=_Stream(report, on_output, on_failure),
        )
    except KeyboardInterrupt as exc:
        # say exactly what is at the destination: outputs published before the interruption stand
        planned = getattr(report, "planned", [])
        raise Interrupted(
            *exc.args,
            published=[str(dest / name) for name in planned if (dest / name).exists()],
            not_published=[str(dest / name) for name in planned if not (dest / name).exists()],
        ) from exc


def _made(folder: Path) -> Path:
    """``folder``, created if it is not there yet."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only place, a file in the way, no permission
        raise output_error(exc, folder, "create the output folder") from None
    return folder


def _merge_run(
    arguments,
    out_dir: Path,
    report: RunReport,
    *,
    settings: dict,
    spec: MergeSpec,
    jobs: int,
    executor,
    progress,
    retire: str | None,
    retire_dir,
    replan: bool,
    stream: _Stream,
) -> RunReport:
    """A merge-run's stages: the journal (plan options, finished outputs stand, published ones
    adopted), the plan of what is left, each output through ``merge_files``' stages in a worker,
    ``AfterVerified`` here as each is verified (finished ones re-verified first), the summary."""
    started, dest = time.perf_counter(), report.out_dir
    with (
        ExclusiveLock(out_dir / RUN_LOCK_NAME, what=RUN_LOCK_WHAT),
        Journal(out_dir) as journal,
        open_merge_catalog(spec) as catalog,
    ):
        _require_readable_catalog(catalog, spec, retire=retire)
        _check_plan_settings(journal, settings, replan=replan or spec.force)
        clean_stale_files(out_dir)
        finished = _reconcile(journal, dest, spec)
        outputs = _plan(arguments, settings, journal, finished, catalog, spec, report)
        after_verified = AfterVerified(
            catalog,
            spec,
            journal=journal,
            retire=retire,
            retire_dir=retire_dir,
            failures=report.failures,
        )
        outcomes = _Outcomes(journal, report, after_verified, stream)
        for entry in finished:
            outcomes.stand(_report_from_journal(dest / entry.name, entry, spec), entry.state)
        stream.emit()
        tasks = _record_tasks(outputs, journal, dest, spec, catalog, jobs)
        progress.start(
            label=f"merge-run {dest.name}",
            files=sum(len(p.inputs) for p in outputs),
            events=sum(p.event_count for p in outputs),
            bytes=sum(p.file_size for p in outputs),
        )
        with _executor(jobs, executor, progress) as chosen:
            for task in tasks:
                journal.set_state(task.name, JournalState.MERGING)
            for task, result, error in chosen.map_unordered(run_merge_task, tasks):
                outcomes.take(task, result, error)
                raise_if_stopped()  # a stop whose own exception was lost: take no further output
        progress.finish(label=plural(len(report.outputs), "output"))
        if catalog is not None:
            report.catalog = catalog.budget
    report.outputs.sort(key=lambda o: o.output.name)
    report.seconds = time.perf_counter() - started
    return report


def _require_readable_catalog(catalog, spec: MergeSpec, *, retire: str | None) -> None:
    """Retiring needs a catalogue that reads a declaration back before an input goes."""
    if retire and not catalog.queryable:
        raise ParameterError(
            f"retire needs a catalogue that can be read back ({spec.catalog} is "
            "declare-only): a declaration is confirmed before inputs are retired",
            parameters=("retire", "catalog"),
        )


def _plan(
    arguments,
    settings: dict,
    journal: Journal,
    finished: list[JournalEntry],
    catalog,
    spec: MergeSpec,
    report: RunReport,
) -> list[PlannedOutput]:
    """The outputs to merge now: the inputs not merged yet (by this merge-run or, with a
    catalogue, anyone), planned with ``settings``; never this merge-run's own outputs (finished
    or not), nor the inputs of finished ones.  Inputs refused with ``skip_bad`` are reported and
    left out; with ``expect_complete`` so are runs the catalogue says are missing files."""
    dest = report.out_dir
    not_merged = None
    if catalog is not None and catalog.queryable:
        _prefetch(catalog, arguments)
        not_merged = lambda path: catalog.check_not_merged(path, output_name="")  # noqa: E731
    exclude = {resolved_name(p) for entry in finished for p in entry.inputs}
    exclude |= {resolved_name(dest / entry.name) for entry in journal.entries()}
    plan = plan_run(
        arguments,
        **settings,
        skip_bad=spec.skip_bad,
        exclude=exclude,
        check_input=not_merged,
        validate=_validator(spec),
        merged_tier=spec.data_tier,
    )
    report.skipped.extend({"file": path, "reason": exc.to_dict()} for path, exc in plan.rejected)
    outputs = _refuse_incomplete_runs(plan.outputs, finished, catalog, spec, report)
    clash = {o.name for o in outputs} & {e.name for e in finished}
    if clash:
        raise InconsistentInputs(
            f"new inputs would remake finished outputs ({', '.join(sorted(clash))}); "
            "use force=True to redo them",
            path=dest,
        )
    report.planned = [o.name for o in outputs]
    return outputs


def _record_tasks(
    outputs: list[PlannedOutput], journal: Journal, dest, spec: MergeSpec, catalog, jobs: int
) -> list[MergeTask]:
    """Journal the plan and make each output's ``MergeTask``: a worker merges each input only if
    it is still the file planned (and journaled) here.  ``spec.threads`` is the whole budget:
    outputs merged at once share it; declaring and retiring happen here, not in the workers."""
    for planned in outputs:
        journal.record_plan(
            planned.name,
            planned.run,
            planned.input_paths,
            spec.mode,
            identities=[i.identity() for i in planned.inputs],
        )
    per_output = replace(
        spec,
        threads=max(1, spec.threads // max(1, min(jobs, len(outputs)))),
        declare=False,
        grandparents=False,
        register=None,
        expect_complete=False,
    )
    fetched = catalog is not None and catalog.queryable and spec.verifies
    return [
        MergeTask(
            p.name,
            str(dest / p.name),
            tuple(p.input_paths),
            per_output,
            catalog.lookup(p.input_paths) if fetched else None,
            identities=tuple(i.identity() for i in p.inputs),
        )
        for p in outputs
    ]


@contextmanager
def _executor(jobs: int, executor: str | None, progress):
    """The executor for the tasks; in-process tasks report into the merge-run's progress, worker
    processes through a relay."""
    global _current_progress
    relay = ProgressRelay(progress) if jobs > 1 and not executor else None
    chosen = make_executor(jobs, executor=executor, progress_queue=relay.queue if relay else None)
    _current_progress = _RunLevelProgress(progress)
    try:
        yield chosen
    finally:
        _current_progress = NullProgress()
        if relay is not None:
            relay.close()
        if hasattr(chosen, "close"):
            chosen.close()


class _Outcomes:
    """What the merge-run does with each output's outcome, in this process: journal it, report
    it, ``AfterVerified`` (declare, retire), and stream it to the caller."""

    def __init__(self, journal: Journal, report: RunReport, after_verified, stream: _Stream):
        self.journal, self.report, self.after_verified = journal, report, after_verified
        self.stream = stream

    def stand(self, result: MergeReport, state: JournalState) -> None:
        """An output an earlier merge-run finished: re-verified before anything is done with it."""
        self.report.outputs.append(result)
        self.after_verified(result, state, reverify=True)
        self.stream.emit(result)

    def take(self, task: MergeTask, result: MergeReport, error: EngineError | None) -> None:
        """A worker's outcome: a failure journaled and listed, or a published output."""
        if error is not None:
            self.journal.set_state(task.name, JournalState.FAILED, error=str(error))
            self.report.failures.append({"output": task.name, **error.to_dict()})
            log.info("%s: failed: %s", task.name, error)
            self.stream.emit()
            return
        state = JournalState.VERIFIED if result.verified else JournalState.MERGED
        self.journal.set_state(
            task.name,
            state,
            file_size=result.file_size,
            checksum=result.checksum,
            event_count=result.event_count,
            accepted=[{"path": str(i.path), "adler32": i.adler32} for i in result.accepted],
        )
        self.report.outputs.append(result)
        self.after_verified(result, state)
        log.info(
            "%s: %s, %s, %s",
            task.name,
            result.status if result.status != "merged" else state,
            plural(result.event_count, "event"),
            result.checksum,
        )
        self.stream.emit(result)


class _Stream:
    """Hands each finished output, and each failure recorded since the last call, to the caller's
    callbacks."""

    def __init__(self, report: RunReport, on_output, on_failure):
        self.report, self.on_output, self.on_failure = report, on_output, on_failure
        self.shown_failures = 0

    def emit(self, result: MergeReport | None = None) -> None:
        if result is not None and self.on_output is not None:
            self.on_output(result)
        new = self.report.failures[self.shown_failures :]
        self.shown_failures = len(self.report.failures)
        if self.on_failure is not None:
            for failure in new:
                self.on_failure(failure)


def _prefetch(catalog, arguments) -> None:
    """Ask the catalogue about every input at once (a few requests per hundred files)."""
    try:
        paths = discover_inputs(arguments)
    except UsageError:
        return  # plan_run says what is wrong
    catalog.prefetch(paths)


def _validator(spec: MergeSpec):
    """``validate(path)`` for the plan: read a whole file and raise what is wrong with it."""
    from ..verify import verify_file

    def validate(path) -> None:
        check = verify_file(
            path,
            deep=spec.decodes_events,
            metadata=spec.metadata if spec.verifies else "none",
        )
        if not check.ok:
            raise check.error

    return validate


def _check_plan_settings(journal: Journal, settings: dict, *, replan: bool) -> None:
    """Refuse a rerun that would plan differently from the journal's plan, unless replanning."""
    recorded = journal.settings()
    if recorded and not replan:
        changed = [key for key in settings if key in recorded and recorded[key] != settings[key]]
        if changed:
            said = ", ".join(
                f"{_option(k, recorded[k])} (now {_option(k, settings[k])})" for k in changed
            )
            raise UsageError(
                f"this folder's merge was planned with {said}: a rerun with other options would "
                "change the plan; rerun with the same options, or add replan=True to plan what is "
                "not finished with the new ones (finished outputs stand)",
                path=journal.path.parent,
            )
    journal.record_settings(settings)


def _option(key: str, value) -> str:
    """How a plan option was given, as the parameter: ``run=178000``, or ``run=None`` (every
    run); a string in double quotes (a command line words them as its flags)."""
    return f'{key}="{value}"' if isinstance(value, str) else f"{key}={value}"


def _reconcile(journal: Journal, out_dir: Path, spec: MergeSpec) -> list[JournalEntry]:
    """The journal's finished outputs still in place; unfinished entries are forgotten (replanned).

    An output found published but not journaled as finished (a kill between the two) is adopted
    when it verifies against its sidecar and holds exactly its recorded inputs.
    """
    finished = []
    for entry in list(journal.entries()):
        final = out_dir / entry.name
        if spec.force:
            journal.forget(entry.name)
        elif entry.state in FINISHED and final.exists() and final.stat().st_size == entry.file_size:
            finished.append(entry)
        elif entry.state not in FINISHED and final.exists():
            adopted = _adopt(final, entry)
            if adopted is None:
                raise OutputExists(
                    "exists but is not a finished output of this merge-run (use force=True to redo "
                    "it)",
                    path=final,
                )
            state = JournalState.VERIFIED if spec.verifies else JournalState.MERGED
            journal.set_state(
                entry.name,
                state,
                file_size=adopted.file_size,
                checksum=adopted.checksum,
                event_count=adopted.event_count,
                accepted=[{"path": p, "adler32": None} for p in entry.inputs],
            )
            updated = journal.get(entry.name)
            assert updated is not None  # its state was set just above
            finished.append(updated)
        elif journal.retired(entry.name):
            raise InconsistentInputs(
                "output is gone but its inputs were retired; restore it from the "
                "retirement folder or remove it from the journal",
                path=final,
            )
        else:
            # unfinished: a sidecar without its data is what a kill between the two renames leaves
            if isinstance(final, RemotePath):
                final.protocol.remove(sidecar_path(final), quiet=True)
            else:
                remove_quietly(sidecar_path(final))
            journal.forget(entry.name)
    return finished


def _adopt(final: Path, entry: JournalEntry) -> JournalEntry | None:
    from ..readers import open_file
    from ..verify import verify_file

    check = verify_file(final, metadata="auto")
    if not check.ok or check.metadata_checked != "sidecar":
        return None
    with open_file(final) as reader:
        merged_from = (reader.metadata.get("merge") or {}).get("inputs")
    if merged_from != [location(p).name for p in entry.inputs]:
        return None
    from ..checksums import format_adler32

    entry.file_size, entry.checksum, entry.event_count = (
        check.file_size,
        format_adler32(check.adler32),
        check.event_count,
    )
    return entry


def _refuse_incomplete_runs(
    outputs: list[PlannedOutput],
    finished: list[JournalEntry],
    catalog,
    spec: MergeSpec,
    report: RunReport,
) -> list[PlannedOutput]:
    """With --expect-complete, drop (and report) every run the catalogue says is missing files."""
    if not spec.expect_complete:
        return outputs
    names = names_by_run(
        [(location(i.path).name, o.run) for o in outputs for i in o.inputs]
        + [(location(p).name, e.run) for e in finished for p in e.inputs]
    )
    refused = set()
    for run_number in sorted({o.run for o in outputs}):
        try:
            catalog.check_complete({run_number: names[run_number]})
        except IncompleteRun as exc:
            refused.add(run_number)
            report.failures.append({"run": run_number, **exc.to_dict()})
    return [o for o in outputs if o.run not in refused]


def _report_from_journal(final: Path, entry: JournalEntry, spec: MergeSpec) -> MergeReport:
    from ..checksums import parse_checksum

    return MergeReport(
        output=final,
        mode=entry.mode or spec.mode,
        file_size=entry.file_size or 0,
        adler32=parse_checksum(entry.checksum) if entry.checksum else 0,
        event_count=entry.event_count or 0,
        verified=entry.state != JournalState.MERGED,
        status=f"already {entry.state}",
    )
