"""Pre-flight of a merge's inputs: everything that can be known before a byte is copied.

Opening an input costs a few reads (header, trailer, index), so every input is opened up front:
unreadable, foreign, truncated or empty files, the same file given twice (by path or by UUID),
mixed runs, disagreeing bookkeeping keys, a size or event count that contradicts the sidecar or
catalogue, and events shared between inputs are all found before the output is created.  What
needs the whole file read (block digests, adler32, decoding) is done later, in the pipeline's
validation stage.  Duplicate events are found in one vectorized pass: sort all (run, event)
keys with their input number; any key seen before belongs to an earlier input (or the same
one), and the later input is the one at fault: a resubmitted job's output beside the original,
or a partition merged twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..remote import is_url, location
from typing import Any, Callable

import numpy as np

from ..errors import AllInputsRejected, DuplicateEvents, EngineError, InconsistentInputs, UsageError
from ..format import EventTable
from ..readers import open_file
from ..verify.crosscheck import FileFacts, crosscheck_facts, measured_facts, stated_facts
from .spec import MergeSpec


@dataclass
class PreparedInput:
    path: Path
    reader: Any                       # an open reader (engine.readers)
    bookkeeping: dict | None          # sidecar or catalogue metadata, when the mode checks it
    expected: FileFacts | None        # what the bookkeeping says the file is
    error: EngineError | None = None

    @property
    def events(self) -> EventTable:
        return self.reader.events

    @property
    def runs(self) -> list[int]:
        return [int(r) for r in np.unique(self.reader.events.run)]

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


BookkeepingSource = Callable[[Path], "dict | None"]


def sidecar_bookkeeping(path: Path) -> dict | None:
    from ..metadata import load_sidecar

    return load_sidecar(path)


def prepare_inputs(paths, spec: MergeSpec, *, bookkeeping: BookkeepingSource | None = None,
                   check_input: Callable[[Path], None] | None = None) -> list[PreparedInput]:
    """Open and pre-check every input.  Without ``skip_bad`` the first problem raises; with it,
    bad inputs come back with ``error`` set and the rest go on.  ``check_input(path)`` is one
    more check per input (the catalogue's not-merged-twice)."""
    paths = [location(p) for p in paths]
    if not paths:
        raise UsageError("no input files given")
    if bookkeeping is None and spec.checks_bookkeeping and spec.metadata == "auto":
        bookkeeping = sidecar_bookkeeping
    prepared: list[PreparedInput] = []
    seen_paths: dict[Path, Path] = {}
    seen_uuids: dict[Any, Path] = {}
    try:
        for path in paths:
            item = PreparedInput(path, None, None, None)
            prepared.append(item)
            try:
                _prepare_one(item, spec, bookkeeping, seen_paths, seen_uuids)
                if check_input is not None:
                    check_input(path)
            except EngineError as exc:
                _reject(item, exc.with_path(path), spec)
        _check_runs(prepared, spec)
        _check_agreement(prepared, spec)
        _check_duplicate_events(prepared, spec)
        if not any(p.error is None for p in prepared):
            raise AllInputsRejected([p.error for p in prepared])
    except BaseException:
        for item in prepared:
            item.close()
        raise
    return prepared


def _reject(item: PreparedInput, exc: EngineError, spec: MergeSpec) -> None:
    if not spec.skip_bad:
        raise exc
    item.error = exc
    item.close()


def _prepare_one(item, spec, bookkeeping, seen_paths, seen_uuids) -> None:
    real = item.path if is_url(item.path) else Path(os.path.realpath(item.path))
    if real in seen_paths:
        same = "" if seen_paths[real] == item.path else f" (also as {seen_paths[real]})"
        raise InconsistentInputs(f"the same input is given twice{same}", path=item.path)
    seen_paths[real] = item.path
    item.reader = open_file(item.path)
    reader = item.reader
    if reader.uuid in seen_uuids:
        raise InconsistentInputs(f"same file content as {seen_uuids[reader.uuid]} (file UUID {reader.uuid})",
                                 path=item.path)
    seen_uuids[reader.uuid] = item.path
    if reader.event_count == 0:
        raise InconsistentInputs("input holds no events", path=item.path)
    if not spec.checks_bookkeeping:
        return
    embedded = reader.metadata.get("file_name")
    if spec.metadata == "auto" and embedded is not None and embedded != item.path.name:
        from ..errors import MetadataMismatch

        raise MetadataMismatch("the file's own metadata names another file", path=item.path, region="metadata",
                               expected=item.path.name, actual=embedded)
    if bookkeeping is not None:
        item.bookkeeping = bookkeeping(item.path)
        if item.bookkeeping is not None:
            item.expected = stated_facts(item.bookkeeping)
            source = "catalogue" if spec.catalog else "sidecar"
            # all but the adler32 now; it once the validation stage has read the file
            partial = measured_facts(reader, item.expected.adler32, item.path.name, item.expected)
            crosscheck_facts(item.path, partial, item.expected, source=source)


def _good(prepared):
    return [p for p in prepared if p.error is None]


def _check_runs(prepared, spec: MergeSpec) -> None:
    if spec.allow_mixed_runs:
        return
    good = _good(prepared)
    if not good:
        return
    first_runs = good[0].runs
    for item in good:
        if len(item.runs) > 1 or item.runs != first_runs:
            _reject(item, InconsistentInputs(
                f"input holds run(s) {', '.join(map(str, item.runs))} but the merge is of run "
                f"{', '.join(map(str, first_runs))} (use --allow-mixed-runs to merge runs together)",
                path=item.path), spec)


def _check_agreement(prepared, spec: MergeSpec) -> None:
    if not spec.checks_bookkeeping:
        return
    from ..metadata import check_agreement

    described = [(p.path.name, p.bookkeeping) for p in _good(prepared) if p.bookkeeping is not None]
    if len(described) > 1:
        check_agreement(described)  # disagreement is about the set, not one input: never skipped


def _check_duplicate_events(prepared, spec: MergeSpec) -> None:
    if not spec.checks_bookkeeping:
        return
    good = _good(prepared)
    offenders = find_duplicate_events([p.events for p in good])
    for position, (run, event, original) in offenders.items():
        item = good[position]
        other = "itself" if original == position else good[original].path.name
        _reject(item, DuplicateEvents(f"run {run} event {event} appears again (first in {other})",
                                      path=item.path), spec)


def find_duplicate_events(tables: list[EventTable]) -> dict[int, tuple[int, int, int]]:
    """For every table that repeats a (run, event) seen earlier (or within itself): the first such
    key and the table holding its first occurrence.  Vectorized: one sort over all events."""
    if not tables:
        return {}
    runs = np.concatenate([t.run for t in tables])
    events = np.concatenate([t.event for t in tables])
    source = np.repeat(np.arange(len(tables), dtype=np.int64), [len(t) for t in tables])
    if len(events) and int(events.max()) < (1 << 32):
        key = (runs.astype(np.uint64) << np.uint64(32)) | events
        order = np.argsort(key, kind="stable")   # stable keeps input order within a key
        sorted_key = key[order]
        repeat = sorted_key[1:] == sorted_key[:-1]
    else:
        order = np.lexsort((source, events, runs))
        repeat = (runs[order][1:] == runs[order][:-1]) & (events[order][1:] == events[order][:-1])
    if not repeat.any():
        return {}
    later = order[1:][repeat]                 # positions (in the concatenation) of repeated keys
    # the first occurrence of each repeated key: walk back to the start of its run of equal keys
    group_start = np.flatnonzero(~np.concatenate([[False], repeat]))
    starts_of_repeat = group_start[np.searchsorted(group_start, np.flatnonzero(repeat) + 1, side="right") - 1]
    first = order[starts_of_repeat]
    offenders: dict[int, tuple[int, int, int]] = {}
    for pos, orig in sorted(zip(later.tolist(), first.tolist())):
        table = int(source[pos])
        if table not in offenders:
            offenders[table] = (int(runs[pos]), int(events[pos]), int(source[orig]))
    return offenders
