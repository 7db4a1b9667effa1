"""Crosschecks between a file and what others say about it.

Two kinds: a file against its record (the sidecar ``<file>.json`` or a catalogue record, as
``metadata.FileFacts``: name, size, adler32, event count, run numbers, first and last event; the
adler32 once the file is read whole, ``crosscheck_adler32``), and a merged output against
its inputs (exactly the inputs' events, in order, with the same payload digests).  Both raise
``ConsistencyError`` subclasses naming what differs and where; both are pure comparisons with no
I/O of their own.
"""

from __future__ import annotations

import numpy as np

from ..checksums import adler32_hex
from ..errors import EventCountMismatch, EventMismatch, MetadataMismatch
from ..format import EventTable
from ..metadata import FileFacts


def measured_facts(reader, adler32: int | None, name: str, expected: FileFacts) -> FileFacts:
    """The same facts of an open file, from its index (only those ``expected`` states are
    computed)."""
    events = reader.events
    runs = first = last = None
    if expected.runs is not None:
        runs = tuple(events.runs())
    if reader.event_count and (expected.first_event is not None or expected.last_event is not None):
        first, last = int(events.event.min()), int(events.event.max())
    return FileFacts(reader.file_size, adler32, reader.event_count, name, runs, first, last)


def crosscheck_facts(path, actual: FileFacts, expected: FileFacts) -> None:
    """Every fact ``expected`` states must equal the measured one (an adler32 not measured yet,
    None, is left for ``crosscheck_adler32`` once the file is read whole)."""
    source = expected.source
    if (
        expected.file_name is not None
        and actual.file_name is not None
        and expected.file_name != actual.file_name
    ):
        raise MetadataMismatch(
            f"{source} names a different file",
            path=path,
            expected=expected.file_name,
            actual=actual.file_name,
        )
    if expected.file_size is not None and expected.file_size != actual.file_size:
        raise MetadataMismatch(
            f"file size differs from the {source}",
            path=path,
            expected=expected.file_size,
            actual=actual.file_size,
        )
    if actual.adler32 is not None:
        crosscheck_adler32(path, actual.adler32, expected)
    if expected.event_count is not None and expected.event_count != actual.event_count:
        raise MetadataMismatch(
            f"event count differs from the {source}",
            path=path,
            expected=expected.event_count,
            actual=actual.event_count,
        )
    if expected.runs is not None and actual.runs is not None and expected.runs != actual.runs:
        raise MetadataMismatch(
            f"runs differ from the {source}",
            path=path,
            expected=_runs(expected.runs),
            actual=_runs(actual.runs),
        )
    for field in ("first_event", "last_event"):
        stated, measured = getattr(expected, field), getattr(actual, field)
        if stated is not None and measured is not None and stated != measured:
            raise MetadataMismatch(
                f"{field} differs from the {source}", path=path, expected=stated, actual=measured
            )


def crosscheck_embedded_name(path, reader) -> None:
    """The name a file's own (embedded) metadata gives, if any, must be the file's name."""
    embedded = reader.metadata.get("file_name")
    if embedded is not None and embedded != path.name:
        raise MetadataMismatch(
            "the file's own metadata names another file",
            path=path,
            region="metadata",
            expected=path.name,
            actual=embedded,
        )


def crosscheck_adler32(path, adler32: int, expected: FileFacts) -> None:
    """The adler32 of the whole file, read, must be the one ``expected`` states (if it does)."""
    if expected.adler32 is not None and expected.adler32 != adler32:
        raise MetadataMismatch(
            f"adler32 differs from the {expected.source}",
            path=path,
            expected=adler32_hex(expected.adler32),
            actual=adler32_hex(adler32),
        )


def _runs(runs: tuple[int, ...]) -> str:
    return ", ".join(map(str, runs)) or "none"


def crosscheck_events(path, output, expected) -> None:
    """The output's event list must be the concatenation of its inputs' (``expected``: tables or
    readers, in order): count, order, lengths, digests.  ``output`` is an ``EventTable`` or a
    reader; readers are read a chunk at a time (``iter_event_chunks``, ``event_slice``) and
    released after, so the comparison holds one chunk of each side, whatever the number of
    events."""
    sources = [expected] if isinstance(expected, EventTable) else list(expected)
    total = sum(_count(s) for s in sources)
    if _count(output) != total:
        raise EventCountMismatch(
            "merged output does not hold exactly the inputs' events",
            path=path,
            expected=total,
            actual=_count(output),
        )
    start = 0
    for source in sources:
        for table in (
            source.iter_event_chunks() if hasattr(source, "iter_event_chunks") else [source]
        ):
            piece = (
                output.event_slice(start, start + len(table))
                if hasattr(output, "event_slice")
                else output.slice(start, start + len(table))
            )
            for name in ("run", "event", "length", "digest"):
                a, b = getattr(piece, name), getattr(table, name)
                if not np.array_equal(a, b):
                    i = int(np.argmin(a == b))
                    raise EventMismatch(
                        f"merged output's event {start + i} differs from the inputs' ({name})",
                        path=path,
                        region=f"block {int(piece.block[i])}",
                        expected=int(b[i]),
                        actual=int(a[i]),
                    )
            start += len(table)
        if hasattr(source, "release"):
            source.release()


def _count(table) -> int:
    return table.event_count if hasattr(table, "event_count") else len(table)
