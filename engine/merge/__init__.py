"""Merging TMB files: the Python API other production tools call (no subprocess needed).

- ``merge_files(inputs, output, spec)``: merge inputs, in order, into one verified output.
- ``merge_run(inputs_or_dirs, out_dir, ...)``: plan a run's outputs and merge them, resumably.
- ``plan_run(...)``: the plan alone.
- ``MergeSpec``: mode (fast/safe/deep), --force, --skip-bad, ...; ``parse_size('2GiB')``.

Every function returns a report object (``MergeReport``, ``RunReport``, ``Plan``) with
``to_dict()``, or raises an ``engine.errors.EngineError`` when nothing was produced.
"""

from .pipeline import merge_files
from .plan import Plan, plan_run
from .report import InputOutcome, MergeReport, RunReport
from .run import merge_run
from ..units import parse_size
from .spec import DEEP, FAST, MODES, SAFE, MergeSpec

__all__ = ["merge_files", "merge_run", "plan_run", "Plan", "MergeSpec", "MergeReport", "RunReport",
           "InputOutcome", "parse_size", "FAST", "SAFE", "DEEP", "MODES"]
