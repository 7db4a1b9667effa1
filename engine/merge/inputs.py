"""Pre-flight of a merge's inputs: everything that can be known before a byte is copied.

Opening an input costs a few reads (header, trailer, index), so every input is opened up front:
unreadable, foreign, truncated or empty files, the same file given twice (by path or by UUID),
mixed runs, disagreeing bookkeeping keys, a size or event count that contradicts the sidecar or
catalogue, and events shared between inputs are all found before the output is created.  What
needs the whole file read (block digests, adler32, decoding) is done later, in the pipeline's
validation stage.  Duplicate events are found by an external sort of all (run, event) keys
(``duplicates.find_duplicate_events``): any key seen before belongs to an earlier input (or the
same one), and the later input is the one at fault.

Inputs are opened one at a time and released once checked (``TmbReader.release``): what was
read stays (header, metadata, block table, runs), the file descriptor and the event table do
not, so 5,000 inputs hold 5,000 small records and a handful of open files, and no event table
is held whole; later steps read each input again, a slice at a time, as they reach it.

An input merge-run planned is re-identified as it is opened (``check_planned_identity``: by
``stat`` before it is parsed, and on the open file): one swapped, changed or gone since planning
fails the whole output, with or without ``skip_bad`` (the plan, and the output's name, hold it).

With ``skip_bad``, duplicates (the same file content twice, shared events) are judged among
inputs that passed validation: the inputs involved are read and checked whole first
(``validate_whole``), so a damaged replica is left out as damaged and never shadows the good
copy.  In safe and deep modes an input without bookkeeping (no sidecar) is refused: the modes
promise a crosscheck, and ``--metadata none`` says to merge without one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from ..checksums import RunningAdler32, adler32_hex
from ..errors import (
    AllInputsRejected,
    DuplicateEvents,
    EngineError,
    InconsistentInputs,
    InputChanged,
    MetadataMismatch,
    MetadataMissing,
    UsageError,
)
from ..pool import bounded_map
from ..readers import open_file
from ..remote import is_url, location
from ..verify.crosscheck import FileFacts, crosscheck_facts, measured_facts, stated_facts
from .duplicates import find_duplicate_events
from .spec import MergeSpec

__all__ = ["PreparedInput", "prepare_inputs", "find_duplicate_events"]


@dataclass
class PreparedInput:
    path: Path
    reader: Any  # an open reader (engine.readers)
    bookkeeping: dict | None  # sidecar or catalogue metadata, when the mode checks it
    expected: FileFacts | None  # what the bookkeeping says the file is
    error: EngineError | None = None
    runs: list[int] = field(default_factory=list)  # the run numbers the input holds, sorted
    wide_events: bool = False  # some event number needs more than 32 bits
    adler32: int | None = None  # once read whole

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


BookkeepingSource = Callable[[Path], "dict | None"]


def sidecar_bookkeeping(path: Path) -> dict | None:
    from ..metadata import load_sidecar

    return load_sidecar(path)


def prepare_inputs(
    paths,
    spec: MergeSpec,
    *,
    bookkeeping: BookkeepingSource | None = None,
    check_input: Callable[[Path], None] | None = None,
    planned: dict[str, dict] | None = None,
) -> list[PreparedInput]:
    """Open and pre-check every input.  Without ``skip_bad`` the first problem raises; with it,
    bad inputs come back with ``error`` set and the rest go on.  ``check_input(path)`` is one
    more check per input (the catalogue's not-merged-twice).  ``planned``: {path: identity} as
    merge-run journaled it at planning (``PlannedInput.identity``); an input that is no longer
    that file raises ``InputChanged``, with or without ``skip_bad``: the output was planned with
    it, so nothing of that output is merged."""
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
                _prepare_one(
                    item, spec, bookkeeping, seen_paths, seen_uuids, (planned or {}).get(str(path))
                )
                if check_input is not None:
                    check_input(path)
            except InputChanged:
                raise
            except EngineError as exc:
                _reject(item, exc.with_path(path), spec)
            if item.reader is not None:
                item.reader.release()  # open files stay few; read again when its turn comes
        _check_runs(prepared, spec)
        _check_agreement(prepared, spec)
        _check_duplicates(prepared, spec)
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


def _prepare_one(
    item, spec, bookkeeping, seen_paths, seen_uuids, planned: dict | None = None
) -> None:
    real = item.path if is_url(item.path) else Path(os.path.realpath(item.path))
    if real in seen_paths:
        same = "" if seen_paths[real] == item.path else f" (also as {seen_paths[real]})"
        raise InconsistentInputs(f"the same input is given twice{same}", path=item.path)
    seen_paths[real] = item.path
    if planned is not None and not is_url(item.path):
        try:  # before it is parsed: what another file holds now says nothing about the planned one
            check_planned_identity(item.path, planned, os.stat(item.path))
        except FileNotFoundError:
            raise InputChanged(
                "is gone since merge-run planned it: nothing of its output is merged",
                path=item.path,
            ) from None
    item.reader = open_file(item.path)
    if (
        planned is not None
    ):  # and the file now open is that file (it may have been swapped meanwhile)
        check_planned_identity(item.path, planned, item.reader.identity)
    reader = item.reader
    if reader.uuid in seen_uuids and not spec.skip_bad:  # with skip_bad, judged after validation
        raise InconsistentInputs(
            f"same file content as {seen_uuids[reader.uuid]} (file UUID {reader.uuid})",
            path=item.path,
        )
    seen_uuids.setdefault(reader.uuid, item.path)
    if reader.event_count == 0:
        raise InconsistentInputs("input holds no events", path=item.path)
    runs: set[int] = set()
    for part in reader.iter_event_chunks():
        runs.update(part.runs())
        item.wide_events = item.wide_events or int(part.event.max()) >= 1 << 32
    item.runs = sorted(runs)
    if not spec.checks_bookkeeping:
        return
    embedded = reader.metadata.get("file_name")
    if spec.metadata == "auto" and embedded is not None and embedded != item.path.name:
        from ..errors import MetadataMismatch

        raise MetadataMismatch(
            "the file's own metadata names another file",
            path=item.path,
            region="metadata",
            expected=item.path.name,
            actual=embedded,
        )
    if bookkeeping is not None:
        item.bookkeeping = bookkeeping(item.path)
        if item.bookkeeping is None:
            from ..metadata import sidecar_path

            where = (
                "catalogue record" if spec.catalog else f"sidecar ({sidecar_path(item.path).name})"
            )
            raise MetadataMissing(
                f"no {where}: {spec.mode} mode crosschecks every input with its metadata "
                "(use --metadata none to merge without crosschecks)",
                path=item.path,
            )
        item.expected = stated_facts(item.bookkeeping)
        source = "catalogue" if spec.catalog else "sidecar"
        # all but the adler32 now; it once the validation stage has read the file
        partial = measured_facts(reader, item.expected.adler32, item.path.name, item.expected)
        crosscheck_facts(item.path, partial, item.expected, source=source)


def check_planned_identity(path: Path, planned: dict, now) -> None:
    """Raise ``InputChanged``, saying what changed, unless ``now`` (an ``os.stat_result``, a
    reader's
    ``identity`` tuple, or a remote file's size) is the file merge-run planned (``planned``)."""
    if isinstance(now, os.stat_result):  # (a tuple too, of other fields)
        now = {
            "device": now.st_dev,
            "inode": now.st_ino,
            "size": now.st_size,
            "mtime_ns": now.st_mtime_ns,
        }
    elif isinstance(now, int):
        now = {"size": now}
    else:
        now = dict(zip(("device", "inode", "size", "mtime_ns"), now, strict=True))
    changes = []
    if (planned.get("device"), planned.get("inode")) != (
        now.get("device"),
        now.get("inode"),
    ) and planned.get("inode") is not None:
        changes.append(
            f"another file now has its name (device:inode {planned['device']}:{planned['inode']} "
            f"planned, {now['device']}:{now['inode']} now)"
        )
    if planned.get("size") != now["size"]:
        changes.append(f"size {planned.get('size')} bytes planned, {now['size']} now")
    if planned.get("mtime_ns") is not None and planned["mtime_ns"] != now.get("mtime_ns"):
        changes.append(
            f"modified since planning (mtime {_when(planned['mtime_ns'])} planned, "
            f"{_when(now['mtime_ns'])} now)"
        )
    if changes:
        raise InputChanged(
            f"is not the file merge-run planned: {'; '.join(changes)}; nothing of its output is "
            "merged (rerun merge-run to plan it again)",
            path=path,
        )


def _when(ns: int) -> str:
    from datetime import datetime

    return (
        datetime.fromtimestamp(ns / 1e9, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def validate_whole(item: PreparedInput, spec: MergeSpec) -> None:
    """Read and check a whole input (block digests, adler32 against its bookkeeping; deep mode
    decodes every block): what a robust merge proves before copying a byte of it."""
    adler = RunningAdler32()
    if spec.decodes_events:
        for _ in bounded_map(
            item.reader.decode, item.reader.iter_blocks(adler), threads=max(1, spec.threads - 1)
        ):
            pass
    else:
        for _ in item.reader.check_blocks(adler, threads=1):
            pass
    item.reader.release()
    check_adler(item, adler.value, spec)


def check_adler(item: PreparedInput, value: int, spec: MergeSpec) -> None:
    """Record an input's adler32, read whole; refuse it if its bookkeeping says otherwise."""
    item.adler32 = value
    if (
        item.expected is not None
        and item.expected.adler32 is not None
        and item.expected.adler32 != value
    ):
        source = "catalogue" if spec.catalog else "sidecar"
        raise MetadataMismatch(
            f"adler32 differs from the {source}",
            path=item.path,
            expected=adler32_hex(item.expected.adler32),
            actual=adler32_hex(value),
        )


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
            _reject(
                item,
                InconsistentInputs(
                    f"input holds run(s) {', '.join(map(str, item.runs))} but the merge is of "
                    f"run {', '.join(map(str, first_runs))} (use --allow-mixed-runs to merge "
                    "runs together)",
                    path=item.path,
                ),
                spec,
            )


def _check_agreement(prepared, spec: MergeSpec) -> None:
    if not spec.checks_bookkeeping:
        return
    from ..metadata import check_agreement

    described = [(p.path.name, p.bookkeeping) for p in _good(prepared) if p.bookkeeping is not None]
    if len(described) > 1:
        check_agreement(described)  # disagreement is about the set, not one input: never skipped


def _check_duplicates(prepared, spec: MergeSpec) -> None:
    """Refuse the later of two inputs with the same content (file UUID) or shared events.

    With ``skip_bad``, an input involved in a clash is first read whole: a damaged one is left
    out as damaged, and only inputs that passed validation are judged against each other.
    """
    offenders = _duplicates(_good(prepared), spec)
    if offenders and spec.skip_bad:
        involved = {
            id(item): item for offender, original, _ in offenders for item in (offender, original)
        }
        for item in involved.values():
            try:
                validate_whole(item, spec)
            except EngineError as exc:
                _reject(item, exc.with_path(item.path), spec)
        offenders = _duplicates(_good(prepared), spec)
    for item, _original, text in offenders:
        kind = InconsistentInputs if text.startswith("same file content") else DuplicateEvents
        _reject(item, kind(text, path=item.path), spec)


def _duplicates(
    good: list[PreparedInput], spec: MergeSpec
) -> list[tuple[PreparedInput, PreparedInput, str]]:
    """(later input, the earlier one it repeats, why) for every clash, in input order."""
    clashes: dict[int, tuple[PreparedInput, PreparedInput, str]] = {}
    first_of_uuid: dict[Any, PreparedInput] = {}
    for item in good:
        uuid = item.reader.uuid
        if uuid in first_of_uuid:
            clashes[id(item)] = (
                item,
                first_of_uuid[uuid],
                f"same file content as {first_of_uuid[uuid].path} (file UUID {uuid})",
            )
        else:
            first_of_uuid[uuid] = item
    if spec.checks_bookkeeping:
        candidates = [p for p in good if id(p) not in clashes]
        offenders = find_duplicate_events(
            [_ReadOnce(p.reader) for p in candidates], wide=any(p.wide_events for p in candidates)
        )
        for position, (run, event, original) in offenders.items():
            item = candidates[position]
            other = "itself" if original == position else candidates[original].path.name
            clashes[id(item)] = (
                item,
                candidates[original],
                f"run {run} event {event} appears again (first in {other})",
            )
    return [
        (item, original, text)
        for item, original, text in sorted(clashes.values(), key=lambda clash: good.index(clash[0]))
    ]


class _ReadOnce:
    """An input's event table read through once, chunk by chunk, its file released after."""

    def __init__(self, reader):
        self.reader = reader

    def iter_event_chunks(self):
        yield from self.reader.iter_event_chunks()
        self.reader.release()
