"""Planning a run's merge: which inputs go into which output, and what each output is called.

Inputs are grouped by run (an output never mixes runs), ordered by partition, and cut into
outputs near a target size: the number of outputs is the smallest that keeps each under the
target (and under ``max_events``), and cuts are made as the running size passes an even share,
so outputs come out of similar size instead of full ones and a small remainder.  An input as
large as the target on its own becomes its own output.  Two inputs of the same run and
partition (a resubmitted job's output beside the original) are refused here, before anything
is merged.

Outputs are named after the run and the partition range they hold,
``tmb_0000178000_mrg_p000-p017.tmb`` (or, for inputs with no partition number, after their
first and last event: ``tmb_0000178000_mrg_e1-e51000.tmb``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..remote import location
from typing import Any

from ..errors import EngineError, InconsistentInputs, MetadataError, UsageError
from ..readers import open_file
from .spec import DEFAULT_MAX_EVENTS, DEFAULT_TARGET_SIZE

_PARTITION_RE = re.compile(r"_p(\d+)\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class PlannedInput:
    path: str
    run: int
    partition: int | None
    file_size: int
    event_count: int
    first_event: int
    last_event: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "run": self.run, "partition": self.partition, "file_size": self.file_size,
                "event_count": self.event_count}


@dataclass(frozen=True)
class PlannedOutput:
    name: str
    run: int
    inputs: tuple[PlannedInput, ...]

    @property
    def file_size(self) -> int:
        return sum(i.file_size for i in self.inputs)

    @property
    def event_count(self) -> int:
        return sum(i.event_count for i in self.inputs)

    @property
    def input_paths(self) -> list[str]:
        return [i.path for i in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.name, "run": self.run, "inputs": [i.to_dict() for i in self.inputs],
                "input_count": len(self.inputs), "input_bytes": self.file_size, "event_count": self.event_count}


@dataclass
class Plan:
    outputs: list[PlannedOutput] = field(default_factory=list)
    rejected: list[tuple[str, EngineError]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"outputs": [o.to_dict() for o in self.outputs],
                "rejected": [{"file": p, "reason": e.to_dict()} for p, e in self.rejected],
                "totals": {"outputs": len(self.outputs), "inputs": sum(len(o.inputs) for o in self.outputs),
                           "input_bytes": sum(o.file_size for o in self.outputs),
                           "events": sum(o.event_count for o in self.outputs)}}


def discover_inputs(arguments) -> list[Path]:
    """Files named directly, and the ``*.tmb`` files (not hidden) of directories named."""
    found: list[Path] = []
    for arg in arguments:
        path = location(arg)
        if path.is_dir():   # a remote folder is listed over its protocol
            found.extend(sorted(p for p in path.iterdir() if p.name.endswith(".tmb") and not p.name.startswith(".")))
        else:
            found.append(path)
    if not found:
        raise UsageError(f"no TMB files found in {', '.join(map(str, arguments)) or 'the arguments'}")
    return found


#: Partition numbers go into output names (``p000-p017``): bounded so a name stays short.
MAX_PARTITION = 10**9 - 1


def partition_of(path: Path, metadata: dict) -> int | None:
    value = metadata.get("partition")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        if value > MAX_PARTITION:
            raise MetadataError(f"partition: {value} is out of range (0..{MAX_PARTITION})", path=path,
                                region="metadata")
        return value
    m = _PARTITION_RE.search(path.name)
    return int(m.group(1)) if m else None


def describe_input(path: Path) -> PlannedInput:
    """Run, partition, size and events of one input, from its header and index (a few reads)."""
    with open_file(path) as reader:
        runs = sorted({int(r) for r in set(reader.events.run.tolist())}) if reader.event_count else []
        if not runs:
            raise InconsistentInputs("input holds no events", path=path)
        if len(runs) > 1:
            raise InconsistentInputs(f"input holds several runs ({', '.join(map(str, runs))}); merge-run never "
                                     "mixes runs", path=path)
        return PlannedInput(str(path), runs[0], partition_of(path, reader.metadata), reader.file_size,
                            reader.event_count, int(reader.events.event.min()), int(reader.events.event.max()))


def output_name(run: int, inputs: tuple[PlannedInput, ...]) -> str:
    partitions = [i.partition for i in inputs]
    if all(p is not None for p in partitions):
        return f"tmb_{run:010d}_mrg_p{min(partitions):03d}-p{max(partitions):03d}.tmb"
    return f"tmb_{run:010d}_mrg_e{min(i.first_event for i in inputs)}-e{max(i.last_event for i in inputs)}.tmb"


def plan_run(arguments, *, run: int | None = None, target_size: int = DEFAULT_TARGET_SIZE,
             max_events: int = DEFAULT_MAX_EVENTS, skip_bad: bool = False, exclude=frozenset(),
             check_input=None) -> Plan:
    """Plan the outputs for the inputs named (files or directories); see the module docstring.

    ``exclude`` holds resolved paths already merged (a resumed run): they are left out, and when
    nothing else is left the plan is empty rather than an error.  ``check_input(path)`` may refuse
    an input (the catalogue's not-merged-twice), so that outputs are named after what they hold.
    """
    if target_size <= 0 or max_events <= 0:
        raise UsageError("--target-size and --max-events must be positive")
    plan = Plan()
    by_run: dict[int, list[PlannedInput]] = defaultdict(list)
    try:
        paths = discover_inputs(arguments)
    except UsageError:
        if exclude:
            return plan   # everything was merged (and perhaps retired) already
        raise
    paths = [p for p in paths if str(p.resolve()) not in exclude]
    if not paths and exclude:
        return plan
    for path in paths:
        try:
            described = describe_input(path)
            if check_input is not None:
                check_input(path)
        except EngineError as exc:
            if not skip_bad:
                raise exc.with_path(path)
            plan.rejected.append((str(path), exc.with_path(path)))
            continue
        if run is None or described.run == run:
            by_run[described.run].append(described)
    if not by_run:
        raise UsageError(f"no inputs of run {run}" if run is not None else "no usable inputs")
    for run_number in sorted(by_run):
        inputs = _refuse_repeated_partitions(by_run[run_number], plan, skip_bad)
        inputs.sort(key=lambda i: (i.partition if i.partition is not None else -1, i.first_event))
        for group in split_by_size(inputs, target_size, max_events):
            plan.outputs.append(PlannedOutput(output_name(run_number, group), run_number, group))
    names = [o.name for o in plan.outputs]
    if len(set(names)) != len(names):
        raise InconsistentInputs("two planned outputs would have the same name; partitions overlap")
    return plan


def _refuse_repeated_partitions(inputs: list[PlannedInput], plan: Plan, skip_bad: bool) -> list[PlannedInput]:
    seen: dict[int, PlannedInput] = {}
    kept = []
    for item in inputs:   # in the order given: the later of two copies is the one refused
        if item.partition is not None and item.partition in seen:
            exc = InconsistentInputs(f"partition {item.partition} of run {item.run} is given twice (also "
                                     f"{seen[item.partition].path})", path=item.path)
            if not skip_bad:
                raise exc
            plan.rejected.append((item.path, exc))
            continue
        if item.partition is not None:
            seen[item.partition] = item
        kept.append(item)
    return kept


def split_by_size(inputs: list[PlannedInput], target_size: int, max_events: int) -> list[tuple[PlannedInput, ...]]:
    """Cut an ordered list of inputs into groups near the target; see the module docstring."""
    groups: list[tuple[PlannedInput, ...]] = []
    segment: list[PlannedInput] = []

    def close_segment() -> None:
        if segment:
            groups.extend(_balanced(segment, target_size, max_events))
            segment.clear()

    for item in inputs:
        if item.file_size >= target_size or item.event_count >= max_events:
            close_segment()
            groups.append((item,))   # an oversize input is an output of its own
        else:
            segment.append(item)
    close_segment()
    return groups


def _balanced(inputs: list[PlannedInput], target_size: int, max_events: int) -> list[tuple[PlannedInput, ...]]:
    """The fewest outputs within the limits, cut as evenly as the input sizes allow."""
    total_events = sum(i.event_count for i in inputs)
    total_size = sum(i.file_size for i in inputs)
    count = max(1, math.ceil(total_size / target_size), math.ceil(total_events / max_events))
    while True:
        groups = _cut_even(inputs, count, target_size, max_events)
        if len(groups) <= count:
            return groups
        count += 1   # the sizes do not divide into this many outputs under the limits


def _cut_even(inputs, count: int, target_size: int, max_events: int) -> list[tuple[PlannedInput, ...]]:
    """Cut where the running size is closest to an even share of what remains, within the limits."""
    remaining = sum(i.file_size for i in inputs)
    groups: list[tuple[PlannedInput, ...]] = []
    current: list[PlannedInput] = []
    size = events = 0
    for item in inputs:
        if current:
            share = remaining / max(1, count - len(groups))
            over_limit = size + item.file_size > target_size or events + item.event_count > max_events
            closer_without = abs(size - share) <= abs(size + item.file_size - share)
            if over_limit or (closer_without and len(groups) < count - 1):
                groups.append(tuple(current))
                remaining -= size
                current, size, events = [], 0, 0
        current.append(item)
        size += item.file_size
        events += item.event_count
    if current:
        groups.append(tuple(current))
    return groups
