"""The first stage of a merge, ``PreparedInputs``: every input opened and crosschecked.

Opening an input costs a few reads (header, trailer, index), so every input is opened up front:
unreadable, foreign, truncated or empty files, the same file given twice (by path or by UUID),
mixed runs, records that disagree (data tier, application ...), and events shared between
inputs are all found before the output is created.  Every crosscheck of an input with its
record (sidecar or catalogue: name, size, event count, run numbers, first and last event,
``verify.crosscheck``) is made here, and the one that needs the whole file read, its adler32,
is made by ``PreparedInput.check_adler32`` when the stream (or, with ``skip_bad``, the
look-ahead's ``validate_whole``) has read it.  Duplicate events are found by an external sort
of all (run, event) keys (``duplicates.find_duplicate_events``): any key seen before belongs to
an earlier input (or the same one), and the later input is the one at fault.

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
copy.  In safe and deep modes an input without a record (no sidecar) is refused: the modes
promise a crosscheck, and ``--metadata none`` says to merge without one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from ..checksums import RunningAdler32
from ..errors import (
    AllInputsRejected,
    DuplicateEvents,
    EngineError,
    InconsistentInputs,
    InputChanged,
    MetadataMissing,
    UsageError,
)
from ..metadata import FileFacts, stated_facts
from ..pool import bounded_map
from ..readers import open_file
from ..remote import is_url, location
from ..verify.crosscheck import (
    crosscheck_adler32,
    crosscheck_embedded_name,
    crosscheck_facts,
    measured_facts,
)
from .duplicates import find_duplicate_events
from .report import InputOutcome
from .spec import MergeSpec

__all__ = ["PreparedInput", "PreparedInputs", "prepare_inputs", "find_duplicate_events"]

#: Where an input's record comes from: ``records(path) -> record or None``.
RecordSource = Callable[[Path], "dict | None"]


@dataclass
class PreparedInput:
    """One input, opened and crosschecked with its record; ``error`` set when it is left out."""

    path: Path
    reader: Any = None  # an open reader (engine.readers)
    record: dict | None = None  # its SAM metadata (sidecar or catalogue), where the mode checks it
    expected: FileFacts | None = None  # what the record says the file is
    error: EngineError | None = None
    runs: list[int] = field(default_factory=list)  # the run numbers the input holds, sorted
    wide_events: bool = False  # some event number needs more than 32 bits
    adler32: int | None = None  # once read whole
    merged: bool = False  # every block of it is in the output

    def check_adler32(self, value: int) -> None:
        """Take the input's adler32, read whole, and crosscheck it with the record: the one check
        of an input that waits until the file has been read."""
        self.adler32 = value
        if self.expected is not None:
            crosscheck_adler32(self.path, value, self.expected)

    def outcome(self) -> InputOutcome:
        """What became of this input, for the report."""
        if not self.merged:
            assert self.error is not None
            return InputOutcome(self.path, False, reason=self.error.to_dict())
        return InputOutcome(
            self.path, True, self.reader.event_count, self.reader.file_size, self.adler32
        )

    def close(self) -> None:
        """Close the input's reader."""
        if self.reader is not None:
            self.reader.close()


class PreparedInputs:
    """The first stage of a merge: every input opened and crosschecked (``prepare_inputs``)
    before the output is created; ``good`` are those to merge, in order.  Closed after."""

    def __init__(self, items: list[PreparedInput]):
        self.items = items
        #: What every input's record agrees on (``metadata.check_agreement``), once checked.
        self.agreed: dict | None = None

    @property
    def good(self) -> list[PreparedInput]:
        """The inputs not left out (so far: ``--skip-bad`` may leave more out while streaming)."""
        return [p for p in self.items if p.error is None]

    @property
    def rejected(self) -> list[PreparedInput]:
        """The inputs left out, each with its error."""
        return [p for p in self.items if p.error is not None]

    @property
    def merged(self) -> list[PreparedInput]:
        """The inputs whose every block is in the output."""
        return [p for p in self.items if p.merged]

    def outcomes(self) -> list[InputOutcome]:
        """What became of each input, in order, for the report."""
        return [p.outcome() for p in self.items]

    def close(self) -> None:
        """Close every input's reader."""
        for item in self.items:
            item.close()

    def __enter__(self) -> PreparedInputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sidecar_records(path: Path) -> dict | None:
    """An input's record from its sidecar (None: it has none)."""
    from ..metadata import load_sidecar

    return load_sidecar(path)


def prepare_inputs(
    paths,
    spec: MergeSpec,
    *,
    records: RecordSource | None = None,
    catalog=None,
    output_name: str = "",
    planned: dict[str, dict] | None = None,
) -> PreparedInputs:
    """Open and crosscheck every input.  Without ``skip_bad`` the first problem raises; with it,
    bad inputs come back with ``error`` set and the rest go on.

    ``records(path)``: each input's record (default: its sidecar, in the modes that check
    records; a catalogue's with ``catalog``, a ``MergeCatalog``, which also refuses inputs
    merged already and, with ``expect_complete``, runs it lists files of that are not among the
    inputs).  ``planned``: {path: identity} as merge-run journaled it at planning
    (``PlannedInput.identity``); an input that is no longer that file raises ``InputChanged``,
    with or without ``skip_bad``: the output was planned with it, so nothing of that output is
    merged."""
    paths = [location(p) for p in paths]
    if not paths:
        raise UsageError("no input files given")
    check_input = None
    if catalog is not None and catalog.queryable:
        catalog.prefetch(paths)
        records = records or catalog.record

        def check_input(path: Path) -> None:
            catalog.check_not_merged(path, output_name=output_name)

    if records is None and spec.verifies and spec.metadata == "auto":
        records = sidecar_records
    # the one place saying where records come from, for the crosschecks' messages
    source = "catalogue" if spec.catalog else "sidecar"
    prepared = PreparedInputs([PreparedInput(path) for path in paths])
    seen_paths: dict[Path, Path] = {}
    seen_uuids: dict[Any, Path] = {}
    try:
        for item in prepared.items:
            try:
                _prepare_one(
                    item,
                    spec,
                    records,
                    source,
                    seen_paths,
                    seen_uuids,
                    (planned or {}).get(str(item.path)),
                )
                if check_input is not None:
                    check_input(item.path)
            except InputChanged:
                raise
            except EngineError as exc:
                _reject(item, exc.with_path(item.path), spec)
            if item.reader is not None:
                item.reader.release()  # open files stay few; read again when its turn comes
        items = prepared.items
        _check_runs(items, spec)
        prepared.agreed = _check_agreement(items, spec)
        _check_duplicates(items, spec)
        if not prepared.good:
            raise AllInputsRejected([p.error for p in items])
        if spec.expect_complete and catalog is not None:
            from .catalog import names_by_run

            catalog.check_complete(
                names_by_run((p.path.name, run) for p in prepared.good for run in p.runs or ())
            )
    except BaseException:
        prepared.close()
        raise
    return prepared


def _reject(item: PreparedInput, exc: EngineError, spec: MergeSpec) -> None:
    if not spec.skip_bad:
        raise exc
    item.error = exc
    item.close()


def _prepare_one(
    item, spec, records, source: str, seen_paths, seen_uuids, planned: dict | None = None
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
    if planned is not None:  # and the file now open is that file (it may have been swapped since)
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
    if not spec.verifies:
        return
    if spec.metadata == "auto":
        crosscheck_embedded_name(item.path, reader)
    if records is not None:
        item.record = records(item.path)
        if item.record is None:
            from ..metadata import sidecar_path

            where = (
                "catalogue record"
                if source == "catalogue"
                else f"sidecar ({sidecar_path(item.path).name})"
            )
            raise MetadataMissing(
                f"no {where}: {spec.mode} mode crosschecks every input with its metadata "
                '(use metadata="none" to merge without crosschecks)',
                path=item.path,
            )
        item.expected = stated_facts(item.record, source=source)
        # all but the adler32 now (``check_adler32``, once the file has been read whole)
        crosscheck_facts(
            item.path, measured_facts(reader, None, item.path.name, item.expected), item.expected
        )


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
    """Read and check a whole input (block digests, adler32 against its record; deep mode
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
    item.check_adler32(adler.value)


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
                    f"run {', '.join(map(str, first_runs))} (use allow_mixed_runs=True to merge "
                    "runs together)",
                    path=item.path,
                ),
                spec,
            )


def _check_agreement(prepared, spec: MergeSpec) -> dict | None:
    """What the inputs' records agree on (``metadata.check_agreement``), None when some input
    has no record to compare (fast mode, ``metadata="none"``)."""
    if not spec.verifies:
        return None
    from ..metadata import check_agreement

    good = _good(prepared)
    described = [(p.path.name, p.record) for p in good if p.record is not None]
    if not described or len(described) < len(good):
        return None
    return check_agreement(described)  # about the set, not one input: never skipped


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
    if spec.verifies:
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
