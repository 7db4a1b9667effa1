"""The recovery list: what is missing or failed in a run, each with the tmbmerge command that
resumes it.

Built from a run's monitoring figures (``monitor.run_status``), so the page and the API give
the same list.  Kinds, and what resumes each:

- ``output-failed``: the journal's last attempt at an output failed, or an output was left
  planned/merging by a merge-run that died.  Rerunning the same ``merge-run`` resumes: the
  journal keeps finished outputs and redoes the rest.
- ``declaration-failed`` / ``retirement-failed``: the output is verified but was not declared
  (or its inputs not retired): ``tmbmerge declare`` it (a rerun of ``merge-run`` also retries).
- ``input-skipped``: a robust merge left a bad input out.  Once it is replaced by a good copy,
  ``verify`` it and ``merge`` it, declared, into an output of its own beside the others (not
  ``merge-run``: its journal counts the input as done with the output that left it out).
- ``input-not-merged``: a catalogued unmerged file in no output (it arrived after the merge):
  rerunning ``merge-run`` on the run's folder plans it.
- ``missing-partition``: a partition was never produced.  Once reprocessed, import it into
  the catalogue and rerun ``merge-run``.

Commands name the folders the journals recorded (the inputs' folder, the journal's folder),
the catalogue this service serves and the journal's merge mode and plan options (--run,
--target-size, --max-events: a rerun with others is refused); arguments are shell-quoted,
so each command can be pasted into a shell as it is.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from engine.merge.journal import JournalState


def _join(*parts) -> str:
    return shlex.join(str(p) for p in parts)


def _own_output(run: int, input_name: str) -> str:
    """The merge-run style name of an output holding one input:
    ``tmb_0000178000_mrg_p003-p003.tmb``."""
    from engine.merge.plan import partition_in_name

    partition = partition_in_name(input_name)
    if partition is None:
        return f"tmb_{run:010d}_mrg_{Path(input_name).stem}.tmb"
    return f"tmb_{run:010d}_mrg_p{partition:03d}-p{partition:03d}.tmb"


def _input_folder(status: dict) -> str | None:
    """The one folder the run's journaled inputs came from (None if several or none)."""
    folders = set()
    for o in status["_outputs"]:
        folders.update(str(Path(p).parent) for p in o.inputs)
    return folders.pop() if len(folders) == 1 else None


def _merge_run_command(
    folder_in: str,
    folder_out: str,
    run: int,
    mode: str | None,
    catalog: str,
    retires: bool = False,
    options: dict | None = None,
) -> str:
    """The merge-run that resumes ``run``; with the plan options (``options``, the journal's) of the
    merge-run that wrote ``folder_out``, since a rerun with others is refused."""
    from engine.merge.spec import DEFAULT_MAX_EVENTS, DEFAULT_TARGET_SIZE

    options = options or {}
    words = ["tmbmerge", "merge-run", folder_in, "--out-dir", folder_out]
    if options.get("run", run) is not None:
        words += ["--run", options.get("run", run)]
    for key, default in (("target_size", DEFAULT_TARGET_SIZE), ("max_events", DEFAULT_MAX_EVENTS)):
        if options.get(key, default) != default:
            words += [f"--{key.replace('_', '-')}", options[key]]
    words += ["--mode", mode or "safe", "--catalog", catalog, "--declare"]
    if retires:
        words.append("--retire-inputs")
    return _join(*words)


def recovery_items(status: dict, catalog: str) -> list[dict]:
    """The recovery items of one run (``status`` from ``monitor.run_status`` with ``_outputs``)."""
    run = status["run"]
    items = []
    inputs = _input_folder(status) or "UNMERGED_DIR"
    out_folders = sorted({str(o.folder) for o in status["_outputs"]})
    out = out_folders[0] if len(out_folders) == 1 else "MERGED_DIR"
    out_options = next((o.plan_options for o in status["_outputs"] if str(o.folder) == out), None)
    for o in status["_outputs"]:
        error = o.error or ""
        if o.state in (JournalState.FAILED, JournalState.PLANNED, JournalState.MERGING):
            what = (
                f"output {o.name} failed: {error}"
                if o.state == JournalState.FAILED
                else f"output {o.name} left {o.state} (its merge-run stopped; rerun if none is "
                "running)"
            )
            folder_in = str(Path(o.inputs[0]).parent) if o.inputs else inputs
            items.append(
                {
                    "run": run,
                    "kind": "output-failed",
                    "subject": o.name,
                    "what": what,
                    "command": _merge_run_command(
                        folder_in, str(o.folder), run, o.mode, catalog, o.retires, o.plan_options
                    ),
                }
            )
        elif error.startswith("declaration failed"):
            items.append(
                {
                    "run": run,
                    "kind": "declaration-failed",
                    "subject": o.name,
                    "what": f"output {o.name} is verified but not declared: {error}",
                    "command": _join(
                        "tmbmerge", "declare", o.folder / o.name, "--catalog", catalog
                    ),
                }
            )
        elif error.startswith("retirement failed"):
            folder_in = str(Path(o.inputs[0]).parent) if o.inputs else inputs
            items.append(
                {
                    "run": run,
                    "kind": "retirement-failed",
                    "subject": o.name,
                    "what": f"output {o.name} is declared but its inputs were not retired: {error}",
                    "command": _merge_run_command(
                        folder_in, str(o.folder), run, o.mode, catalog, True, o.plan_options
                    ),
                }
            )
    for s in status["skipped"]:
        path = s["input_path"] or str(Path(inputs) / s["file_name"])
        folder = s["folder"] or out
        own = Path(folder) / _own_output(run, s["file_name"])
        items.append(
            {
                "run": run,
                "kind": "input-skipped",
                "subject": s["file_name"],
                "what": f"input {s['file_name']} was left out of {s['output']}: {s['reason']} "
                "(replace it with a good copy first)",
                "command": f"{_join('tmbmerge', 'verify', path)} && "
                f"{_join('tmbmerge', 'merge', path, '-o', own, '--catalog', catalog, '--declare')}",
            }
        )
    for name in status["not_merged"]:
        items.append(
            {
                "run": run,
                "kind": "input-not-merged",
                "subject": name,
                "what": f"unmerged file {name} is catalogued but in no merged output",
                "command": _merge_run_command(
                    inputs, out, run, "safe", catalog, options=out_options
                ),
            }
        )
    for m in status["missing_partitions"]:
        label = f"p{m['partition']:03d}" if m["partition"] is not None else m["raw_file"]
        items.append(
            {
                "run": run,
                "kind": "missing-partition",
                "subject": label,
                "what": f"partition {label} was never produced ({m['evidence']}); reprocess it "
                "first",
                "command": _join(
                    "tmbmerge",
                    "catalog",
                    "import",
                    inputs,
                    "--catalog",
                    catalog,
                    "--declare-parents",
                )
                + " && "
                + _merge_run_command(inputs, out, run, "safe", catalog, options=out_options),
            }
        )
    return items
