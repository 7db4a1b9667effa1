"""Planning a run's merge: which inputs go into which output, and what each output is called.

Inputs are grouped by run (an output never mixes runs), ordered by partition, and cut into
outputs near a target size: the number of outputs is the smallest that keeps each under the
target (and under ``max_events``), and cuts are made as the running size passes an even share,
so outputs come out of similar size instead of full ones and a small remainder.  An input as
large as the target on its own becomes its own output.  Two inputs of the same run and
partition (a resubmitted job's output beside the original) are refused here, before anything
is merged; with ``skip_bad`` both copies are first checked whole (``validate``), so a damaged
replica is left out as damaged and the good copy is merged.

Inputs are identified by what they are: the plan holds each input's resolved, absolute path
(a symlink is followed: the file it names is merged, and later retired) and its identity at
planning (st_dev, st_ino, size, mtime, and the adler32 its sidecar gives).  Files of the merged
data tier are never inputs: named on the command line they are refused; found in a folder
(a merge-run writing into its own input folder) they are left out and listed as ignored.

Outputs are named after the run and the partition range they hold,
``tmb_0000178000_mrg_p000-p017.tmb`` (or, for inputs with no partition number, after their
first and last event: ``tmb_0000178000_mrg_e1-e51000.tmb``).
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError, InconsistentInputs, MetadataError, ParameterError, UsageError
from ..readers import open_file
from ..remote import is_url, location
from .spec import DEFAULT_MAX_EVENTS, DEFAULT_TARGET_SIZE

#: The partition in a production file name (``..._p007.tmb``): its digits, as written.
PARTITION_IN_NAME = re.compile(r"_p(\d+)\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class PlannedInput:
    """One input as planned: where it is, what it holds and its size."""

    path: str  # absolute, symlinks resolved
    run: int
    partition: int | None
    file_size: int
    event_count: int
    first_event: int
    last_event: int
    given: str | None = None  # as named (absolute), when that differs from ``path`` (a symlink)
    device: int | None = None  # (st_dev, st_ino, st_mtime_ns) at planning
    inode: int | None = None
    mtime_ns: int | None = None
    adler32: int | None = None  # what the input's sidecar says, if it has one

    def to_dict(self) -> dict[str, Any]:
        """The input as the plan shows it."""
        return {
            "file": self.path,
            "run": self.run,
            "partition": self.partition,
            "file_size": self.file_size,
            "event_count": self.event_count,
        }

    def identity(self) -> dict[str, Any]:
        """What the journal keeps to recognise this input later (see ``retire.check_identity``)."""
        return {
            "path": self.path,
            "given": self.given,
            "device": self.device,
            "inode": self.inode,
            "size": self.file_size,
            "mtime_ns": self.mtime_ns,
            "adler32": self.adler32,
            "event_count": self.event_count,
        }


@dataclass(frozen=True)
class PlannedOutput:
    """One planned output: its name, run and inputs, in partition order."""

    name: str
    run: int
    inputs: tuple[PlannedInput, ...]

    @property
    def file_size(self) -> int:
        """Bytes of the inputs."""
        return sum(i.file_size for i in self.inputs)

    @property
    def event_count(self) -> int:
        """Events of the inputs."""
        return sum(i.event_count for i in self.inputs)

    @property
    def input_paths(self) -> list[str]:
        """The inputs' paths, in order."""
        return [i.path for i in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        """The output as the plan shows it."""
        return {
            "output": self.name,
            "run": self.run,
            "inputs": [i.to_dict() for i in self.inputs],
            "input_count": len(self.inputs),
            "input_bytes": self.file_size,
            "event_count": self.event_count,
        }


@dataclass
class Plan:
    """A run's plan: the outputs to make, the inputs refused and the files left alone."""

    outputs: list[PlannedOutput] = field(default_factory=list)
    rejected: list[tuple[str, EngineError]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(
        default_factory=list
    )  # (path, why): merged files in a folder

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``tmbmerge plan --json``)."""
        return {
            "outputs": [o.to_dict() for o in self.outputs],
            "rejected": [{"file": p, "reason": e.to_dict()} for p, e in self.rejected],
            "ignored": [{"file": p, "reason": why} for p, why in self.ignored],
            "totals": {
                "outputs": len(self.outputs),
                "inputs": sum(len(o.inputs) for o in self.outputs),
                "input_bytes": sum(o.file_size for o in self.outputs),
                "events": sum(o.event_count for o in self.outputs),
            },
        }


def discover_inputs(arguments) -> list[Path]:
    """Files named directly, and the ``*.tmb`` files (not hidden) of directories named."""
    return [path for path, _ in _discover(arguments)]


def _discover(arguments) -> list[tuple[Path, bool]]:
    """(path, named directly) for every input."""
    found: list[tuple[Path, bool]] = []
    for arg in arguments:
        path = location(arg)
        if path.is_dir():  # a remote folder is listed over its protocol
            found.extend(
                (p, False)
                for p in sorted(path.iterdir())
                if p.name.endswith(".tmb") and not p.name.startswith(".")
            )
        else:
            found.append((path, True))
    if not found:
        raise UsageError(
            f"no TMB files found in {', '.join(map(str, arguments)) or 'the arguments'}"
        )
    return found


#: Partition numbers go into output names (``p000-p017``): bounded so a name stays short.
MAX_PARTITION = 10**9 - 1


def partition_of(path: Path, metadata: dict) -> int | None:
    """The partition of an input: its metadata's, else its file name's, else None."""
    value = metadata.get("partition")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        if value > MAX_PARTITION:
            raise MetadataError(
                f"partition: {value} is out of range (0..{MAX_PARTITION})",
                path=path,
                region="metadata",
            )
        return value
    return partition_in_name(path.name)


def partition_in_name(name: str) -> int | None:
    """The partition a file name gives (``..._p007.tmb`` -> 7), or None."""
    m = PARTITION_IN_NAME.search(name)
    return int(m.group(1)) if m else None


class MergedInput(InconsistentInputs):
    """A file of the merged data tier offered to merge-run as an input."""


def describe_input(path: Path, *, merged_tier: str = "thumbnail") -> PlannedInput:
    """Run, partition, size, events and identity of one input, from its header and index (a few
    reads); a file of ``merged_tier`` (or any tmbmerge output) is refused (``MergedInput``)."""
    where = location(path)
    remote = is_url(where)
    given = where if remote else Path(os.path.abspath(where))
    real = location(resolved_name(where))
    with open_file(real) as reader:
        if reader.metadata.get("data_tier") == merged_tier or "merge" in reader.metadata:
            raise MergedInput(
                f"is a merged file (data tier {reader.metadata.get('data_tier')}): merge-run "
                "merges unmerged files only",
                path=path,
            )
        runs = (
            sorted({int(r) for r in set(reader.events.run.tolist())}) if reader.event_count else []
        )
        if not runs:
            raise InconsistentInputs("input holds no events", path=path)
        if len(runs) > 1:
            raise InconsistentInputs(
                f"input holds several runs ({', '.join(map(str, runs))}); merge-run never "
                "mixes runs",
                path=path,
            )
        stat = None if remote else os.stat(real)  # a remote file is known by its URL and size alone
        return PlannedInput(
            str(real),
            runs[0],
            partition_of(real, reader.metadata),
            reader.file_size,
            reader.event_count,
            int(reader.events.event.min()),
            int(reader.events.event.max()),
            given=str(given) if given != real else None,
            device=stat and stat.st_dev,
            inode=stat and stat.st_ino,
            mtime_ns=stat and stat.st_mtime_ns,
            adler32=None if remote else _sidecar_adler32(real),
        )


def resolved_name(name) -> str:
    """How the journal and the plan name a file: absolute with symlinks resolved, or its URL."""
    where = location(name)
    return str(where) if is_url(where) else os.path.realpath(where)


def _sidecar_adler32(path: Path) -> int | None:
    from ..checksums import adler32_from_checksums
    from ..metadata import read_sidecar

    try:
        md = read_sidecar(path)
        return adler32_from_checksums(md.get("checksum") or []) if md else None
    except EngineError:
        return None  # a bad sidecar is the merge's to report, with the rest of its crosschecks


def output_name(run: int, inputs: tuple[PlannedInput, ...]) -> str:
    """The name of the output merging ``inputs`` of ``run``: by partitions, else by events."""
    partitions = [i.partition for i in inputs if i.partition is not None]
    if len(partitions) == len(inputs):
        return f"tmb_{run:010d}_mrg_p{min(partitions):03d}-p{max(partitions):03d}.tmb"
    first = min(i.first_event for i in inputs)
    last = max(i.last_event for i in inputs)
    return f"tmb_{run:010d}_mrg_e{first}-e{last}.tmb"


def plan_run(
    arguments,
    *,
    run: int | None = None,
    target_size: int = DEFAULT_TARGET_SIZE,
    max_events: int = DEFAULT_MAX_EVENTS,
    skip_bad: bool = False,
    exclude=frozenset(),
    check_input=None,
    validate=None,
    merged_tier: str = "thumbnail",
) -> Plan:
    """Plan the outputs for the inputs named (files or directories); see the module docstring.

    ``exclude`` holds resolved paths already merged, or written, by this merge-run (a resumed
    merge-run's inputs and outputs): they are left out, and when nothing else is left the plan is
    empty rather than an error.  ``check_input(path)`` may refuse an input (the catalogue's
    not-merged-twice), so that outputs are named after what they hold.  ``validate(path)``
    checks a whole file (raising ``EngineError``); with ``skip_bad`` it decides between two
    copies of a partition.
    """
    if target_size <= 0 or max_events <= 0:
        raise ParameterError(
            "target_size and max_events must be positive", parameters=("target_size", "max_events")
        )
    plan = Plan()
    by_run: dict[int, list[PlannedInput]] = defaultdict(list)
    try:
        found = _discover(arguments)
    except UsageError:
        if exclude:
            return plan  # everything was merged (and perhaps retired) already
        raise
    found = [(p, named) for p, named in found if resolved_name(p) not in exclude]
    if not found and exclude:
        return plan
    for path, named in found:
        try:
            described = describe_input(path, merged_tier=merged_tier)
            if check_input is not None:
                check_input(location(described.path))
        except MergedInput as exc:
            if named and not skip_bad:
                raise
            if named:
                plan.rejected.append((str(path), exc))
            else:
                plan.ignored.append((str(path), exc.message))
            continue
        except EngineError as exc:
            exc.with_path(path)
            if not skip_bad:
                raise
            plan.rejected.append((str(path), exc))
            continue
        if run is None or described.run == run:
            by_run[described.run].append(described)
    if not by_run:
        if exclude or plan.ignored:
            return plan  # only this merge-run's own inputs and outputs, or merged files, are left
        raise UsageError(f"no inputs of run {run}" if run is not None else "no usable inputs")
    for run_number in sorted(by_run):
        inputs = _refuse_repeated_partitions(by_run[run_number], plan, skip_bad, validate)
        inputs.sort(key=lambda i: (i.partition if i.partition is not None else -1, i.first_event))
        for group in split_by_size(inputs, target_size, max_events):
            plan.outputs.append(PlannedOutput(output_name(run_number, group), run_number, group))
    names = [o.name for o in plan.outputs]
    if len(set(names)) != len(names):
        raise InconsistentInputs("two planned outputs would have the same name; partitions overlap")
    return plan


def _refuse_repeated_partitions(
    inputs: list[PlannedInput], plan: Plan, skip_bad: bool, validate=None
) -> list[PlannedInput]:
    if skip_bad and validate is not None:
        inputs = _validate_repeated(inputs, plan, validate)
    seen: dict[int, PlannedInput] = {}
    kept = []
    for item in inputs:  # in the order given: the later of two copies is the one refused
        if item.partition is not None and item.partition in seen:
            exc = InconsistentInputs(
                f"partition {item.partition} of run {item.run} is given twice (also "
                f"{seen[item.partition].path})",
                path=item.path,
            )
            if not skip_bad:
                raise exc
            plan.rejected.append((item.path, exc))
            continue
        if item.partition is not None:
            seen[item.partition] = item
        kept.append(item)
    return kept


def _validate_repeated(inputs: list[PlannedInput], plan: Plan, validate) -> list[PlannedInput]:
    """Check every copy of a partition given more than once; leave the damaged ones out."""
    copies: dict[int, int] = defaultdict(int)
    for item in inputs:
        if item.partition is not None:
            copies[item.partition] += 1
    kept = []
    for item in inputs:
        if item.partition is not None and copies[item.partition] > 1:
            try:
                validate(item.path)
            except EngineError as exc:
                plan.rejected.append((item.path, exc.with_path(item.path)))
                continue
        kept.append(item)
    return kept


def split_by_size(
    inputs: list[PlannedInput], target_size: int, max_events: int
) -> list[tuple[PlannedInput, ...]]:
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
            groups.append((item,))  # an oversize input is an output of its own
        else:
            segment.append(item)
    close_segment()
    return groups


def _balanced(
    inputs: list[PlannedInput], target_size: int, max_events: int
) -> list[tuple[PlannedInput, ...]]:
    """The fewest outputs within the limits, cut as evenly as the input sizes allow."""
    total_events = sum(i.event_count for i in inputs)
    total_size = sum(i.file_size for i in inputs)
    count = max(1, math.ceil(total_size / target_size), math.ceil(total_events / max_events))
    while True:
        groups = _cut_even(inputs, count, target_size, max_events)
        if len(groups) <= count:
            return groups
        count += 1  # the sizes do not divide into this many outputs under the limits


def _cut_even(
    inputs, count: int, target_size: int, max_events: int
) -> list[tuple[PlannedInput, ...]]:
    """Cut where the running size is closest to an even share of what remains, within the limits."""
    remaining = sum(i.file_size for i in inputs)
    groups: list[tuple[PlannedInput, ...]] = []
    current: list[PlannedInput] = []
    size = events = 0
    for item in inputs:
        if current:
            share = remaining / max(1, count - len(groups))
            over_limit = (
                size + item.file_size > target_size or events + item.event_count > max_events
            )
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
