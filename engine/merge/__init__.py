"""Merging TMB files: the Python API other production tools call (no subprocess needed).

- ``merge_files(inputs, output, spec)``: merge inputs, in order, into one verified output.
- ``merge_run(inputs_or_dirs, out_dir, ...)``: plan a run's outputs and merge them, resumably.
- ``plan_run(...)``: the plan alone.
- ``MergeSpec``: mode (fast/safe/deep), --force, --skip-bad, ...; ``parse_size('2GiB')``.

Every function returns a report object (``MergeReport``, ``RunReport``, ``Plan``) with
``to_dict()``, or raises an ``engine.errors.EngineError`` when nothing was produced.
"""

import importlib

# imported on first use: ``tmbmerge merge`` needs the pipeline, not the journal, the planner or the
# process executors (start-up is most of a small merge's time)
_WHERE = {
    "merge_files": ".pipeline",
    "merge_run": ".run",
    "plan_run": ".plan",
    "Plan": ".plan",
    "MergeSpec": ".spec",
    "MergeReport": ".report",
    "RunReport": ".report",
    "InputOutcome": ".report",
    "parse_size": "..units",
    "FAST": ".spec",
    "SAFE": ".spec",
    "DEEP": ".spec",
    "MODES": ".spec",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
