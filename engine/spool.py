"""The event columns of a file being written, held until its index is written: in memory up to a
bound, then in a temporary file.

A TMB index stores its event table column by column after all the blocks, so a writer must keep
every event's entry (28 bytes) until the end: 280 MB for 10 million events.  ``EventSpool`` keeps
the most recent ``memory_events`` entries in memory and appends older ones to an anonymous
temporary file (one segment per column per flush), then gives each column back, in order, a
segment at a time.  Memory stays under ~``memory_events`` x 28 bytes whatever the file's size;
the spool file costs a sequential write and read of 28 bytes per event, usually from the page
cache.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from .format import EVENT_COLUMNS, EventTable

SPOOL_MEMORY_EVENTS = 1 << 16  # 1.8 MiB of entries in memory before they go to the spool file


_GATHER = 512  # pieces per writev: well under any system's IOV_MAX (1024 on Linux)


def _write_all(fd: int, pieces: list[memoryview]) -> int:
    """Write ``pieces`` one after the other at ``fd``'s position (short writes resumed); returns
    the bytes written."""
    total = 0
    while pieces:
        batch, pieces = pieces[:_GATHER], pieces[_GATHER:]
        written = os.writev(fd, batch)
        total += written
        for i, piece in enumerate(batch):  # a short write: the rest of the batch goes again
            if written < piece.nbytes:
                pieces = [piece[written:], *batch[i + 1 :], *pieces]
                break
            written -= piece.nbytes
    return total


class EventSpool:
    """A writer's event entries: in memory up to ``memory_events``, then spooled column by
    column to an anonymous file beside the output."""

    def __init__(self, *, memory_events: int = SPOOL_MEMORY_EVENTS, directory=None):
        self.memory_events = memory_events
        self.directory = directory
        self._pending: list[EventTable] = []
        self._pending_count = 0
        self._segments: list[list[tuple[int, int]]] = [[] for _ in EVENT_COLUMNS]  # (offset, bytes)
        self._file: BinaryIO | None = None  # made at the first flush
        self.count = 0

    def append(self, table: EventTable) -> None:
        """Add a block's event entries."""
        self._pending.append(table)
        self._pending_count += len(table)
        self.count += len(table)
        if self._pending_count >= self.memory_events:
            self._flush()

    def _spool_fd(self) -> int:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix=".tmbmerge-index-", dir=self.directory)
        return self._file.fileno()

    def _flush(self) -> None:
        fd = self._spool_fd()
        for column, (_, dtype) in enumerate(EVENT_COLUMNS):
            # each table's column goes out as it is (one gathered write, no joined copy)
            pieces = [
                np.ascontiguousarray(t.columns()[column], dtype=dtype).data.cast("B")
                for t in self._pending
            ]
            offset = os.lseek(fd, 0, os.SEEK_END)
            nbytes = _write_all(fd, pieces)
            self._segments[column].append((offset, nbytes))
        self._pending, self._pending_count = [], 0

    def column(self, column: int) -> Iterator[np.ndarray]:
        """Column ``column`` of every event appended, in order, a segment at a time."""
        dtype = EVENT_COLUMNS[column][1]
        for offset, nbytes in self._segments[column]:
            data = os.pread(self._spool_fd(), nbytes, offset)
            if len(data) != nbytes:
                raise OSError(f"index spool file cut short ({len(data)} of {nbytes} bytes)")
            yield np.frombuffer(data, dtype=dtype)
        for table in self._pending:
            yield table.columns()[column]

    def close(self) -> None:
        """Drop what is held and close the spool file."""
        self._pending = []
        if self._file is not None:
            self._file.close()
            self._file = None
