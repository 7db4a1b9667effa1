"""Monitoring figures of a campaign, per run and per dataset, from the catalogue and merge-run
journals.

Per run (``run_status``):

- **raw**: the raw files the run's unmerged files were reconstructed from (their catalogued
  parents, plus any raw-tier file of the run) and the events they hold, when the catalogue
  knows (a parent declared by name only has no event count: ``expected`` is then null);
- **unmerged**: the run's files of the dataset's tier and the events they hold (``produced``),
  with ``events_mismatch`` set when produced != expected, and every partition whose unmerged
  file does not hold its raw file's events;
- **outputs**: from the journals of the ``--journals`` folders, each planned output of the run
  by state (``planned`` counts them all; ``merged`` >= ``verified`` >= ``declared`` >= ``retired``
  count the outputs that got at least that far; ``failed`` those whose last attempt failed),
  the events in finished outputs, and every error the journals hold;
- **skipped**: inputs a robust merge left out (``Merge.skipped`` of the merged outputs'
  sidecars and catalogue records), with their reasons, unless merged since;
- **not_merged**: unmerged files of the run in no journal output and no merged file's parents;
- **missing_partitions**: raw files with no unmerged child, and holes in the partition numbers.

The catalogue is read with plain SQL over the sqlite catalogue's tables (``files``, ``runs``,
``parents``, see ``bindings.catalog.sqlite``): one query per question instead of a record
look-up per file.  Journals are opened per request (``engine.merge.journal.Journal``), so a
page always shows what a merge-run running right now has recorded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.merge.journal import JOURNAL_NAME, Journal, JournalState
from engine.merge.plan import partition_in_name
from engine.metadata import sidecar_path

UNMERGED_TIER = "unmerged-thumbnail"
RAW_TIER = "raw"
MERGED_TIER = "thumbnail"
_PUBLISHED = (
    JournalState.MERGED,
    JournalState.VERIFIED,
    JournalState.DECLARED,
    JournalState.RETIRED,
)
#: For each state an output reaches once published, the states at least that far along.
FINISHED_AT_LEAST = {state: _PUBLISHED[i:] for i, state in enumerate(_PUBLISHED)}


@dataclass
class JournalOutput:
    """One journal row, with the folder it lives in."""

    folder: Path
    name: str
    run: int
    inputs: list[str]
    state: str
    mode: str | None
    event_count: int | None
    error: str | None
    updated: str
    retires: bool  # this folder's merge-run retires inputs
    plan_options: dict = field(
        default_factory=dict
    )  # what its merge-run planned with (Journal.settings)


def journal_outputs(folders, run: int | None = None) -> list[JournalOutput]:
    """Every output the journals of ``folders`` record (of ``run`` only, if given)."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if not (folder / JOURNAL_NAME).exists():
            continue
        with Journal(folder) as journal:
            retires, options = bool(journal.retired()), journal.settings()
            for e in journal.entries():
                if run is None or e.run == run:
                    found.append(
                        JournalOutput(
                            folder,
                            e.name,
                            e.run,
                            e.inputs,
                            e.state,
                            e.mode,
                            e.event_count,
                            e.error,
                            e.updated,
                            retires,
                            options,
                        )
                    )
    return found


class CatalogView:
    """The questions monitoring asks of the sqlite catalogue, one query each."""

    def __init__(self, db):
        self.db = db

    def runs_in_range(self, first: int, last: int, tier: str) -> list[int]:
        return [
            r
            for (r,) in self.db.execute(
                "SELECT DISTINCT r.run_number FROM runs r JOIN files f ON f.file_id = r.file_id "
                "WHERE r.run_number BETWEEN ? AND ? AND f.data_tier = ? ORDER BY r.run_number",
                (first, last, tier),
            )
        ]

    def files_of_run(self, run: int, tier: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT f.file_id, f.file_name, f.event_count, f.file_size, f.params FROM files f "
            "JOIN runs r ON r.file_id = f.file_id WHERE r.run_number = ? AND f.data_tier = ? "
            "GROUP BY f.file_id ORDER BY f.file_name",
            (run, tier),
        ).fetchall()
        return [
            {
                "file_id": i,
                "file_name": n,
                "event_count": e,
                "file_size": s,
                "params": json.loads(p),
            }
            for i, n, e, s, p in rows
        ]

    def parents_of(self, file_ids: list[int]) -> dict[int, list[dict]]:
        found: dict[int, list[dict]] = defaultdict(list)
        for chunk in _chunks(file_ids, 500):
            marks = ",".join("?" * len(chunk))
            for child, name, events, tier in self.db.execute(
                f"SELECT p.child_id, f.file_name, f.event_count, f.data_tier FROM parents p "
                f"JOIN files f ON f.file_id = p.parent_id WHERE p.child_id IN ({marks}) "
                f"ORDER BY p.child_id, p.position",
                chunk,
            ):
                found[child].append({"file_name": name, "event_count": events, "data_tier": tier})
        return found

    def has_children(self, file_ids: list[int], tier: str) -> set[int]:
        """Which of ``file_ids`` have a child of ``tier``."""
        found = set()
        for chunk in _chunks(file_ids, 500):
            marks = ",".join("?" * len(chunk))
            found.update(
                p
                for (p,) in self.db.execute(
                    "SELECT DISTINCT p.parent_id FROM parents p JOIN files f ON f.file_id = "
                    f"p.child_id WHERE p.parent_id IN ({marks}) AND f.data_tier = ?",
                    (*chunk, tier),
                )
            )
        return found


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_status(view: CatalogView, run: int, journals, *, tier: str, outputs=None) -> dict:
    """Everything monitoring knows of one run (see the module docstring).  ``outputs``: the
    journals' rows if the caller read them already (one read for many runs), else they are read."""
    unmerged = view.files_of_run(run, tier)
    parents = view.parents_of([f["file_id"] for f in unmerged])
    raw_by_name = {f["file_name"]: f for f in view.files_of_run(run, RAW_TIER)}
    partition_mismatches = []
    for f in unmerged:
        raws = [p for p in parents.get(f["file_id"], []) if p["data_tier"] in (RAW_TIER, None)]
        for p in raws:
            raw_by_name.setdefault(p["file_name"], p)
        expected = [p["event_count"] for p in raws]
        if raws and None not in expected and sum(expected) != f["event_count"]:
            partition_mismatches.append(
                {
                    "file_name": f["file_name"],
                    "expected": sum(expected),
                    "produced": f["event_count"],
                }
            )
    raw = sorted(raw_by_name.values(), key=lambda p: p["file_name"])
    raw_events = [p.get("event_count") for p in raw]
    expected = sum(raw_events) if raw and None not in raw_events else None
    produced = sum(f["event_count"] or 0 for f in unmerged)

    outputs = (
        journal_outputs(journals, run) if outputs is None else [o for o in outputs if o.run == run]
    )
    states = defaultdict(int)
    for o in outputs:
        states[o.state] += 1
    figures = {
        "planned": len(outputs),
        **{name: sum(states[s] for s in among) for name, among in FINISHED_AT_LEAST.items()},
        "failed": states[JournalState.FAILED],
        "in_progress": states[JournalState.PLANNED] + states[JournalState.MERGING],
    }
    finished_events = sum(o.event_count or 0 for o in outputs if o.state in _PUBLISHED)
    failures = [
        {"output": o.name, "folder": str(o.folder), "state": o.state, "reason": o.error}
        for o in outputs
        if o.error
    ]

    merged = view.files_of_run(run, MERGED_TIER)
    merged_parents = view.parents_of([f["file_id"] for f in merged])
    in_outputs = {Path(p).name for o in outputs for p in o.inputs} | {
        p["file_name"] for ps in merged_parents.values() for p in ps
    }
    skipped = _skipped_inputs(outputs, merged)
    left_out = {(s["output"], s["file_name"]) for s in skipped}
    merged_since = {
        Path(p).name
        for o in outputs
        if o.state in _PUBLISHED
        for p in o.inputs
        if (o.name, Path(p).name) not in left_out
    } | {p["file_name"] for ps in merged_parents.values() for p in ps}
    # an input skipped once and merged since (its recovery command was run) is no longer missing
    skipped = [s for s in skipped if s["file_name"] not in merged_since]
    skipped_names = {s["file_name"] for s in skipped}
    not_merged = [
        f["file_name"]
        for f in unmerged
        if f["file_name"] not in in_outputs and f["file_name"] not in skipped_names
    ]

    return {
        "run": run,
        "data_tier": tier,
        "raw": {
            "files": len(raw),
            "expected_events": expected,
            "without_event_count": sum(1 for e in raw_events if e is None),
        },
        "unmerged": {
            "files": len(unmerged),
            "produced_events": produced,
            "events_mismatch": expected is not None and produced != expected,
            "partition_mismatches": partition_mismatches,
        },
        "outputs": {
            **figures,
            "events": finished_events,
            "catalogued_merged_files": len(merged),
            "catalogued_merged_events": sum(f["event_count"] or 0 for f in merged),
        },
        "failures": failures,
        "skipped": skipped,
        "not_merged": not_merged,
        "missing_partitions": _missing_partitions(view, raw, unmerged, parents),
        "_outputs": outputs,  # for the recovery list; ``public`` drops it
        "journal_outputs": [
            {
                "output": o.name,
                "folder": str(o.folder),
                "state": o.state,
                "inputs": len(o.inputs),
                "events": o.event_count,
                "error": o.error,
                "updated": o.updated,
            }
            for o in outputs
        ],
    }


def public(status: dict) -> dict:
    """The run status as the API gives it (without the internal journal rows)."""
    return {key: value for key, value in status.items() if not key.startswith("_")}


def _skipped_inputs(outputs: list[JournalOutput], merged: list[dict]) -> list[dict]:
    """Inputs a robust merge left out, from the outputs' sidecars and merged catalogue records."""
    found: dict[str, dict] = {}
    for o in outputs:
        if o.state not in _PUBLISHED:
            continue
        sidecar = sidecar_path(o.folder / o.name)
        try:
            skipped = json.loads(sidecar.read_text()).get("Merge.skipped") or []
        except (OSError, ValueError):
            continue
        for entry in skipped:
            found.setdefault(
                entry["file_name"],
                {
                    "file_name": entry["file_name"],
                    "reason": entry.get("reason"),
                    "output": o.name,
                    "folder": str(o.folder),
                    "input_path": _input_path(o, entry["file_name"]),
                },
            )
    for f in merged:
        for entry in f["params"].get("Merge.skipped") or []:
            found.setdefault(
                entry["file_name"],
                {
                    "file_name": entry["file_name"],
                    "reason": entry.get("reason"),
                    "output": f["file_name"],
                    "folder": None,
                    "input_path": None,
                },
            )
    return sorted(found.values(), key=lambda s: s["file_name"])


def _input_path(output: JournalOutput, name: str) -> str | None:
    """Where a skipped input was: beside the output's other inputs."""
    folders = {str(Path(p).parent) for p in output.inputs}
    return str(Path(folders.pop()) / name) if len(folders) == 1 else None


def _missing_partitions(
    view: CatalogView, raw: list[dict], unmerged: list[dict], parents
) -> list[dict]:
    produced_from = {p["file_name"] for ps in parents.values() for p in ps}
    missing = [
        {
            "partition": partition_in_name(r["file_name"]),
            "raw_file": r["file_name"],
            "evidence": f"raw file {r['file_name']} has no unmerged file",
        }
        for r in raw
        if r["file_name"] not in produced_from
    ]
    known = {m["partition"] for m in missing}
    numbers = sorted(
        p for p in (partition_in_name(f["file_name"]) for f in unmerged) if p is not None
    )
    have = set(numbers)
    for p in range(numbers[0], numbers[-1]) if numbers else ():
        if p not in have and p not in known:
            missing.append(
                {
                    "partition": p,
                    "raw_file": None,
                    "evidence": f"no unmerged file of partition p{p:03d} between p{numbers[0]:03d} "
                    f"and p{numbers[-1]:03d}",
                }
            )
    return sorted(missing, key=lambda m: (m["partition"] is None, m["partition"] or 0))


def dataset_runs(view: CatalogView, dataset: dict) -> list[int]:
    runs = dataset["runs"]
    if "list" in runs:
        return list(runs["list"])
    return view.runs_in_range(runs["first"], runs["last"], dataset["data_tier"])


def dataset_totals(statuses: list[dict]) -> dict:
    """Sums of the per-run figures of a dataset."""
    expected = [s["raw"]["expected_events"] for s in statuses]
    totals = {
        "runs": len(statuses),
        "raw_files": sum(s["raw"]["files"] for s in statuses),
        "expected_events": sum(expected) if statuses and None not in expected else None,
        "unmerged_files": sum(s["unmerged"]["files"] for s in statuses),
        "produced_events": sum(s["unmerged"]["produced_events"] for s in statuses),
        "runs_with_event_mismatch": [
            s["run"] for s in statuses if s["unmerged"]["events_mismatch"]
        ],
        "failures": sum(len(s["failures"]) for s in statuses),
        "skipped": sum(len(s["skipped"]) for s in statuses),
    }
    for key in ("planned", "merged", "verified", "declared", "retired", "failed", "events"):
        totals[f"outputs_{key}"] = sum(s["outputs"][key] for s in statuses)
    return totals
