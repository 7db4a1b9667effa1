"""``tmbmerge merge``, ``merge-run``, ``plan`` and ``status``: the merge jobs' command line.

Each command turns its options into an ``engine.merge.MergeSpec`` and calls the Python API
(``merge_files``, ``merge_run``, ``plan_run``); what is printed is the API's report, as text
for people or as JSON (``--json``) for machines.  The engine is imported inside the run
functions so that ``tmbmerge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys

from engine.host import usable_cores
from engine.units import human_bytes, plural

from ..flags import cli_wording
from ._common import (
    add_json_flag,
    add_verbosity,
    default_output_jobs,
    positive_int,
    print_error,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge TMB files, in order, into one verified output",
        description="Merge the inputs, in the order given, into one output. Modes: fast (copy "
        "verified blocks), safe (default: also crosscheck inputs with their sidecars, refuse "
        "duplicate events, and re-read the output to prove it equals the inputs), deep (safe, "
        "plus decompress every block of inputs and output and check every event).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="the merged file to write")
    _add_merge_options(p)
    p.add_argument(
        "--allow-mixed-runs", action="store_true", help="permit inputs of different runs"
    )
    p.set_defaults(func=run_merge)

    p = subparsers.add_parser(
        "hadd",
        help="merge the way ROOT's hadd is typed: tmbmerge hadd [-f] [-k] [-j N] TARGET SOURCE...",
        description="`tmbmerge merge -o TARGET SOURCE...` with hadd's argument order and flags: "
        "-f (and -ff, -fk, -f0..-f9) replace an existing TARGET, -k skips bad sources, -j N sets "
        "the threads. Blocks are always copied as stored (like hadd -fk: no recompression). The "
        "target is never one of the sources. docs/HADD.md maps every hadd option.",
    )
    p.add_argument("output", metavar="TARGET", help="the merged file to write")
    p.add_argument("inputs", nargs="+", metavar="SOURCE", help="files to merge, in order")
    _add_merge_options(p, hadd=True)
    p.add_argument(
        "--allow-mixed-runs", action="store_true", help="permit inputs of different runs"
    )
    p.set_defaults(func=run_merge)

    p = subparsers.add_parser(
        "merge-run",
        help="plan and merge whole runs into outputs near a target size (resumable)",
        description="Group inputs by run (never mixing runs), order them by partition, split "
        "them into outputs near --target-size named after run and partition range, and merge "
        "them, several at once. A journal in OUT_DIR makes a rerun skip finished outputs.",
    )
    p.add_argument("inputs", nargs="+", metavar="DIR|INPUT")
    p.add_argument(
        "--out-dir", required=True, help="folder for the merged files, their sidecars and journal"
    )
    _add_plan_options(p)
    _add_merge_options(p)
    p.add_argument(
        "--executor",
        default=None,
        help="where outputs are merged: local (default), dask:local or dask://HOST:PORT",
    )
    p.add_argument(
        "--retire-inputs",
        nargs="?",
        const="move",
        choices=("move", "delete"),
        default=None,
        help="after an output is verified and declared, move its inputs (and sidecars) to "
        "--retire-dir, or delete them with --retire-inputs=delete",
    )
    p.add_argument(
        "--retire-dir", default=None, help="where retired inputs go (default: retired/ beside them)"
    )
    p.add_argument(
        "--certify",
        action="store_true",
        help="histogram the inputs before merging and the outputs after (tmbmerge certify), kept "
        "in the sqlite --catalog; a run whose merged histograms differ fails (exit 6)",
    )
    p.add_argument(
        "--replan",
        action="store_true",
        help="a rerun with other --run/--target-size/--max-events than the journal's: plan what "
        "is not finished with the new options (without it such a rerun is refused)",
    )
    p.set_defaults(func=run_merge_run)

    p = subparsers.add_parser(
        "plan",
        help="print a run's merge plan without merging",
        description="Show what merge-run would make of the inputs, without writing anything: "
        "each output's name, its inputs in order, events and size, the inputs refused (with "
        "--skip-bad) and the totals. Inputs are grouped by run, ordered by partition and cut "
        "near --target-size, as merge-run does.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="DIR|INPUT",
        help="TMB files, or folders whose *.tmb files are all taken",
    )
    _add_plan_options(p)
    p.add_argument(
        "--skip-bad", action="store_true", help="list unusable inputs instead of failing"
    )
    add_json_flag(p)
    add_verbosity(p, None)
    p.set_defaults(func=run_plan)

    p = subparsers.add_parser(
        "status",
        help="show the journal of a merge-run output folder",
        description="Show what the merge-run journal of OUT_DIR records of each output: its "
        "state (planned, merging, merged, verified, declared, retired or failed, with the "
        "error), inputs, events, size and checksum, and a count per state. Reads the journal "
        "only; run merge-run again to finish unfinished outputs.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="the --out-dir of a merge-run")
    add_json_flag(p)
    add_verbosity(p, None)
    p.set_defaults(func=run_status)


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=int, default=None, help="only this run")
    p.add_argument("--target-size", default="2GiB", help="target output size (default 2GiB)")
    p.add_argument(
        "--max-events", type=positive_int, default=None, help="at most this many events per output"
    )


# hadd's spellings of "replace the target": -ff and -fk (compression of the first source), -f0..-f9
# (a compression level).  tmbmerge copies blocks as stored, so they all mean -f.
HADD_FORCE_FLAGS = ("-ff", "-fk", *(f"-f{level}" for level in range(10)))


def _add_merge_options(p: argparse.ArgumentParser, *, hadd: bool = False) -> None:
    p.add_argument(
        "--mode",
        choices=("fast", "safe", "deep"),
        default="safe",
        help="checks to apply (default safe)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=None,
        help="merge: threads (default: number of cores); merge-run: outputs merged at once "
        "(default: half the cores, at least 1)",
    )
    p.add_argument(
        "-f",
        "--force",
        *(HADD_FORCE_FLAGS if hadd else ()),
        action="store_true",
        help="replace existing outputs",
    )
    p.add_argument(
        "-k",
        "--skip-bad",
        action="store_true",
        help="robust merge: leave out inputs that fail validation (fail only if all do)",
    )
    p.add_argument(
        "--metadata",
        choices=("auto", "none"),
        default="auto",
        help="auto: crosscheck inputs with their <file>.json sidecars; none: ignore sidecars",
    )
    p.add_argument(
        "--reproducible",
        action="store_true",
        help="byte-reproducible outputs and sidecars: every timestamp is $SOURCE_DATE_EPOCH or, "
        "unset, the newest input's creation time (file ids are always derived from content)",
    )
    add_verbosity(p, "no progress display, no summary lines")
    add_json_flag(p)
    g = p.add_argument_group("catalogue")
    g.add_argument(
        "--catalog",
        default=os.environ.get("TMBMERGE_CATALOG"),
        help="catalogue URL (sqlite:///path.db, samweb+https://HOST/sam/EXP/api, exec:COMMAND; "
        "default $TMBMERGE_CATALOG): inputs are crosschecked against it and refused if already "
        "merged",
    )
    g.add_argument(
        "--declare", action="store_true", help="declare the verified output, with its parents"
    )
    g.add_argument(
        "--declarer", default=None, help="a plugin declarer (entry point group tmbmerge.declarers)"
    )
    g.add_argument(
        "--register",
        metavar="rucio:RSE?scope=S&dataset=D",
        default=None,
        help="after declaring, register the output's replica in Rucio at RSE and attach it to the "
        "dataset (needs rucio-clients; docs/CATALOG.md)",
    )
    g.add_argument(
        "--grandparents",
        action="store_true",
        help="declare the output with its inputs' parents as its parents (for catalogues that do "
        "not keep unmerged files)",
    )
    g.add_argument(
        "--expect-complete",
        action="store_true",
        help="refuse a run whose catalogued unmerged files are not all among the inputs",
    )


def _spec(args, jobs: int):
    from engine.merge import MergeSpec

    return MergeSpec(
        mode=args.mode,
        force=args.force,
        skip_bad=args.skip_bad,
        allow_mixed_runs=getattr(args, "allow_mixed_runs", False),
        threads=jobs,
        metadata=args.metadata,
        catalog=args.catalog or None,
        declare=args.declare,
        declarer=args.declarer,
        expect_complete=args.expect_complete,
        reproducible=args.reproducible,
        grandparents=args.grandparents,
        register=args.register,
    )


def run_merge(args) -> int:
    from engine.merge import merge_files

    from ..progress import make_progress

    jobs = args.jobs or usable_cores()
    progress = make_progress(args.quiet or args.json)
    try:
        report = merge_files(args.inputs, args.output, _spec(args, jobs), progress=progress)
    finally:
        progress.finish()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    elif not args.quiet:
        _print_merge(report)
    if report.declare_error is not None:
        print_error(
            "declaration failed, the verified output is kept (retry with tmbmerge declare): "
            f"{report.declare_error}"
        )
        return report.declare_error.exit_code
    return 0


def _print_merge(report) -> None:
    state = "verified" if report.verified else "not re-read (fast mode)"
    print(
        f"{report.output}: {plural(len(report.accepted), 'input')}, "
        f"{plural(report.event_count, 'event')}, {human_bytes(report.file_size)}, "
        f"{report.checksum}, {report.mode} mode, {state}"
        + (
            f", {report.seconds:.1f} s at {report.throughput / 1e6:.0f} MB/s"
            if report.seconds
            else ""
        )
    )
    for skipped in report.skipped:
        print(
            f"  skipped {skipped.path}: "
            + cli_wording(skipped.reason.get("message") if skipped.reason else "")
        )
    if report.declared and report.declared != "failed":
        print(f"  {report.declared} in the catalogue")
    for retired in report.retired:
        print(
            f"  retired {retired['file']}"
            + (f" -> {retired['destination']}" if retired["destination"] else " (deleted)")
        )


def run_merge_run(args) -> int:
    from engine.errors import most_severe_exit_code
    from engine.merge import merge_run
    from engine.units import parse_size

    from ..progress import make_progress

    jobs = args.jobs or default_output_jobs()
    progress = make_progress(args.quiet or args.json)
    plan_kwargs = _plan_kwargs(args, parse_size)
    # one line per output as it is published, and per failure as it happens (a log file follows
    # the run)
    streaming = not args.json
    certifier = None
    if args.certify:
        from .certify import MergeCertifier

        certifier = MergeCertifier(args.catalog, args.inputs, run=args.run)
    try:  # the thread budget is all cores, shared by the outputs merged at once
        report = merge_run(
            args.inputs,
            args.out_dir,
            spec=_spec(args, max(jobs, usable_cores())),
            jobs=jobs,
            executor=args.executor,
            progress=progress,
            retire=args.retire_inputs,
            retire_dir=args.retire_dir,
            replan=args.replan,
            on_output=_print_run_output if streaming and not args.quiet else None,
            on_failure=_print_failure if streaming else None,
            **plan_kwargs,
        )
    finally:
        progress.finish()
    certified = certifier.finish(report) if certifier is not None else None
    if args.json:
        json.dump(
            {**report.to_dict(), **({"certification": certified} if certified is not None else {})},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        for verdict in certified or ():
            print(f"run {verdict['run']}: {verdict['status']} ({verdict['detail']})")
        if any(verdict["status"] == "failed" for verdict in certified or ()):
            _print_failure(report.failures[-1])
        for skipped in report.skipped:
            print(f"skipped {skipped['file']}: {cli_wording(skipped['reason']['text'])}")
        if not args.quiet:
            print(
                f"{plural(len(report.outputs), 'output')} ready, "
                f"{plural(len(report.failures), 'failure')}, {report.seconds:.1f} s"
            )
    return most_severe_exit_code(f.get("exit_code", 1) for f in report.failures)


def _print_run_output(output) -> None:
    if output.status != "merged":
        print(
            f"{output.output}: {output.status}, {plural(output.event_count, 'event')}, "
            f"{output.checksum}",
            flush=True,
        )
    else:
        _print_merge(output)
        sys.stdout.flush()


def _print_failure(failure: dict) -> None:
    print_error(failure["text"])


def _plan_kwargs(args, parse_size) -> dict:
    from engine.merge.spec import DEFAULT_MAX_EVENTS

    return {
        "run": args.run,
        "target_size": parse_size(args.target_size),
        "max_events": args.max_events or DEFAULT_MAX_EVENTS,
    }


def run_plan(args) -> int:
    from engine.merge import plan_run
    from engine.units import parse_size

    plan = plan_run(args.inputs, skip_bad=args.skip_bad, **_plan_kwargs(args, parse_size))
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    if plan.outputs:
        _print_plan_table(plan.outputs)
    for path, exc in plan.rejected:
        print(f"rejected {path}: {cli_wording(exc.message)}")
    for path, why in plan.ignored:
        print(f"ignored {path}: {why}")
    totals = plan.to_dict()["totals"]
    print(
        f"{plural(totals['outputs'], 'output')} from {plural(totals['inputs'], 'input')}, "
        f"{plural(totals['events'], 'event')}, "
        f"{human_bytes(totals['input_bytes'])}"
    )
    return 0


def _print_plan_table(outputs) -> None:
    """A row per output (inputs, events, size), then a row per input, in order, indented."""
    from ..tables import print_table, table

    shown = table(
        "output / its inputs", "inputs", "events", "size", numeric=("inputs", "events", "size")
    )
    for output in outputs:
        shown.add_row(
            output.name,
            str(len(output.inputs)),
            f"{output.event_count:,}",
            human_bytes(output.file_size),
        )
        for item in output.inputs:
            shown.add_row(
                f"  {posixpath.basename(item.path)}",
                "",
                f"{item.event_count:,}",
                human_bytes(item.file_size),
                style="dim",
            )
        shown.add_section()
    print_table(shown)


def run_status(args) -> int:
    from engine.errors import InputNotFound
    from engine.merge.journal import Journal
    from engine.merge.run import journal_folder

    journal = Journal.open_existing(journal_folder(args.out_dir))
    if journal is None:
        raise InputNotFound(
            "no merge-run journal here (nothing was merged into this folder)", path=args.out_dir
        )
    with journal:
        entries = list(journal.entries())
        if args.json:
            json.dump(
                {
                    "outputs": [e.to_dict() for e in entries],
                    "summary": journal.summary(),
                    "retired": journal.retired(),
                },
                sys.stdout,
                indent=2,
            )
            print()
            return 0
        if entries:
            _print_status_table(entries)
        summary = ", ".join(f"{count} {state}" for state, count in journal.summary().items())
        print(f"{plural(len(entries), 'output')}: {summary or 'none'}")
    return 0


def _print_status_table(entries) -> None:
    """A row per output (state, inputs, events, size, checksum), its error on the row below."""
    from ..tables import print_table, table

    shown = table(
        "state",
        "output",
        "inputs",
        "events",
        "size",
        "checksum",
        numeric=("inputs", "events", "size"),
    )
    for e in entries:
        done = e.event_count is not None
        shown.add_row(
            str(e.state),
            e.name,
            str(len(e.inputs)),
            f"{e.event_count:,}" if done else "",
            human_bytes(e.file_size or 0) if done else "",
            e.checksum or "" if done else "",
        )
        if e.error:
            shown.add_row("", f"error: {cli_wording(e.error)}", end_section=True)
    print_table(shown)
