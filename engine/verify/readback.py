"""Verification of a file while it is being written: read each block back, check it, decode it.

A merge in safe or deep mode hands every block to a ``BlockReadback`` right after writing it.
The block is read back from the output file itself (not from the bytes in memory), its header
and stored-bytes digest are checked against what was meant to be written and its adler32 is
taken from the bytes read; in deep mode it is also decompressed and every event proven against
the index entries it was written with.  This runs on its own threads while the writer goes on
with the next blocks, so the check overlaps the disk write instead of following it, and the
output's pages can leave the page cache as soon as they are read back and on disk
(``read_through``, see ``fsutil.Writeback``).  The first failure is kept and raised by
``close()``, before anything is published.  The per-block adler32s are combined in file order,
and ``read_back()`` hands the post-merge check (``verify.merged``) what was read, as a
``BlocksReadBack``, so that it need not read the blocks again.
A block's bytes never change once written (the file only grows), so reading them back now
proves what the finished file holds.
"""

from __future__ import annotations

import queue
import threading
from typing import NamedTuple

import numpy as np

from ..blocks import decode_block, read_block
from ..checksums import RunningAdler32, adler32
from ..errors import EngineError, OutputError
from ..format import BLOCK_HEADER_SIZE, BlockHeader, EventTable, block_table
from ..pool import MIN_BUFFER_BYTES, anonymous_buffer, bounded_map
from ..source import LocalSource

_DONE = object()


class BlocksReadBack(NamedTuple):
    """What a closed ``BlockReadback`` read: how many blocks, their bytes' combined adler32
    (``RunningAdler32``: value and size, in file order) and their block table
    (``format.BLOCK_DTYPE``: where each is, what its header says, its first event's number)."""

    block_count: int
    adler32: RunningAdler32
    table: np.ndarray


class BlockReadback:
    """Reads back and checks each block of an output being written (see the module docstring).

    ``path`` is the file being written, ``name`` the output as the user named it (what errors
    say); ``threads`` check blocks at once; ``decode`` also decodes them (deep mode)."""

    def __init__(self, path, *, threads: int, decode: bool, name=None):
        self.path = path
        self.name = name or path
        self.decode = decode
        # the same block source and block read as a reader's: an OSError is an output error
        self._source: LocalSource | None = LocalSource(path, name=self.name, output=True)
        self._queue: queue.Queue = queue.Queue(maxsize=2 * threads + 2)
        self._error: EngineError | None = None
        self._threads = threads
        self._local = (
            threading.local()
        )  # each decoding thread's two reused buffers: stored, records
        self.blocks_checked = 0
        self.blocks_adler = RunningAdler32()  # the blocks' bytes as read back, in file order
        self.read_through = (
            0  # every block ending at or before this offset is read back and checked
        )
        self._blocks: list[
            tuple
        ] = []  # (offset, first_event, header) of each block read back, in order
        self._events_read_back = 0
        self._ended = False  # the end marker has been taken off the queue
        self._thread = threading.Thread(target=self._run, name="tmb-readback", daemon=True)
        self._thread.start()

    def submit(
        self, number: int, offset: int, header: BlockHeader, events: EventTable, origin=None
    ) -> None:
        """Queue a block just written at ``offset`` (blocks while the decoders are busy).

        The block is read back from the file itself; only its expected header and index entries
        are queued.  ``origin`` is (path, block number, offset) of the block it was copied from: a
        block that fails is reported against the input it came from, where the damage is.
        """
        if self._error is not None:
            raise self._error
        self._queue.put((number, offset, header, events, origin))

    def close(self) -> None:
        """Wait for every queued block; raise the first failure."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without checking what is still queued (the merge failed anyway)."""
        self._error = self._error or EngineError("abandoned")
        self._stop()

    def _stop(self) -> None:
        if self._source is None:
            return
        self._queue.put(_DONE)
        self._thread.join()
        self._source.close()
        self._source = None

    def _items(self):
        while True:
            item = self._queue.get()
            if item is _DONE:
                self._ended = True
                return
            if self._error is None:
                yield item

    def read_back(self) -> BlocksReadBack:
        """What was read back, once ``close()`` has returned without error."""
        return BlocksReadBack(self.blocks_checked, self.blocks_adler, block_table(self._blocks))

    def _run(self) -> None:
        try:
            for offset, header, value, size in bounded_map(
                self._check, self._items(), threads=self._threads
            ):
                self.blocks_adler.append(value, size)
                self._blocks.append((offset, self._events_read_back, header))
                self._events_read_back += header.event_count
                self.blocks_checked += 1
                self.read_through = offset + size
        except BaseException as exc:  # anything, or the writer would wait on a full queue for ever
            if isinstance(exc, EngineError):
                self._error = exc.with_path(self.name)
            else:
                self._error = OutputError(
                    f"reading the output back failed: {exc!r}", path=self.name
                )
            if not self._ended:  # keep draining so the writer never blocks on a dead reader
                for _ in self._items():
                    pass

    def _check(self, item) -> tuple[int, BlockHeader, int, int]:
        """Check one block as read back; its offset, header, adler32 and size."""
        number, offset, expected, events, origin = item
        try:
            return self._check_block(number, offset, expected, events)
        except EngineError as exc:
            if origin is None:
                raise
            path, origin_number, origin_offset = origin
            raise type(exc)(
                f"{exc.message} (found reading back block {number} of the merged output)",
                path=path,
                region=f"block {origin_number}",
                offset=None if exc.offset is None else origin_offset + exc.offset - offset,
                expected=exc.expected,
                actual=exc.actual,
            ) from None

    def _check_block(
        self, number: int, offset: int, expected: BlockHeader, events: EventTable
    ) -> tuple[int, BlockHeader, int, int]:
        buffers = self._local.__dict__.setdefault("buffers", [b"", b""])
        size = BLOCK_HEADER_SIZE + expected.compressed_length
        if len(buffers[0]) < size:
            buffers[0] = anonymous_buffer(max(size, MIN_BUFFER_BYTES))
        header, raw = read_block(
            self._source,
            {"offset": offset, **expected._asdict()},
            number=number,
            into=buffers[0],
            against="the block written",
        )
        if self.decode:
            if len(buffers[1]) < expected.uncompressed_length:
                buffers[1] = anonymous_buffer(max(expected.uncompressed_length, MIN_BUFFER_BYTES))
            # the same decode and checks as verify --deep, uncompressed digest included: a block
            # whose events are right but whose digest field is wrong must not be published
            decode_block(
                header,
                memoryview(raw)[BLOCK_HEADER_SIZE:],
                region=f"block {number}",
                offset=offset,
                out=buffers[1],
                expected=events,
            )
        return offset, header, adler32(raw), len(raw)
