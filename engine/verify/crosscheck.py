"""Crosschecks between a file and what others say about it.

Two kinds: a file against its bookkeeping (the sidecar ``<file>.json`` or a catalogue record:
name, size, adler32, event count), and a merged output against its inputs (exactly the inputs'
events, in order, with the same payload digests).  Both raise ``ConsistencyError`` subclasses
naming what differs and where; both are pure comparisons with no I/O of their own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..checksums import adler32_hex
from ..errors import EventCountMismatch, MetadataMismatch
from ..format import EventTable


class FileFacts(NamedTuple):
    """What was measured of a file, or what its bookkeeping says (None: not stated)."""

    file_size: int | None
    adler32: int | None
    event_count: int | None
    file_name: str | None = None


def crosscheck_facts(path, actual: FileFacts, expected: FileFacts, *, source: str) -> None:
    """Every fact ``expected`` states must equal the measured one."""
    if expected.file_name is not None and actual.file_name is not None and expected.file_name != actual.file_name:
        raise MetadataMismatch(f"{source} names a different file", path=path, expected=expected.file_name,
                               actual=actual.file_name)
    if expected.file_size is not None and expected.file_size != actual.file_size:
        raise MetadataMismatch(f"file size differs from the {source}", path=path, expected=expected.file_size,
                               actual=actual.file_size)
    if expected.adler32 is not None and expected.adler32 != actual.adler32:
        raise MetadataMismatch(f"adler32 differs from the {source}", path=path,
                               expected=adler32_hex(expected.adler32), actual=adler32_hex(actual.adler32))
    if expected.event_count is not None and expected.event_count != actual.event_count:
        raise MetadataMismatch(f"event count differs from the {source}", path=path,
                               expected=expected.event_count, actual=actual.event_count)


def crosscheck_events(path, output, expected) -> None:
    """The output's event list must be the concatenation of its inputs' (``expected``: tables or
    readers, in order): count, order, lengths, digests.  ``output`` is an ``EventTable`` or a reader;
    readers are read a chunk at a time (``iter_event_chunks``, ``event_slice``) and released after,
    so the comparison holds one chunk of each side, whatever the number of events."""
    sources = [expected] if isinstance(expected, EventTable) else list(expected)
    total = sum(_count(s) for s in sources)
    if _count(output) != total:
        raise EventCountMismatch("merged output does not hold exactly the inputs' events", path=path,
                                 expected=total, actual=_count(output))
    start = 0
    for source in sources:
        for table in (source.iter_event_chunks() if hasattr(source, "iter_event_chunks") else [source]):
            piece = (output.event_slice(start, start + len(table)) if hasattr(output, "event_slice")
                     else output.slice(start, start + len(table)))
            for name in ("run", "event", "length", "digest"):
                a, b = getattr(piece, name), getattr(table, name)
                if not np.array_equal(a, b):
                    i = int(np.argmin(a == b))
                    raise EventCountMismatch(f"merged output's event {start + i} differs from the inputs' ({name})",
                                             path=path, region=f"block {int(piece.block[i])}", expected=int(b[i]),
                                             actual=int(a[i]))
            start += len(table)
        if hasattr(source, "release"):
            source.release()


def _count(table) -> int:
    return table.event_count if hasattr(table, "event_count") else len(table)
