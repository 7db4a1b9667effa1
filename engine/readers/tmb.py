"""The native TMB reader: open a file in O(1) reads, then stream its blocks or events.

Strategy: opening reads the header and metadata at the front, the trailer and index at the
back, and validates them all (digests, bounds, block tiling): a truncated or damaged file is
refused before a single block is read.  The index becomes numpy arrays viewing the bytes read.
``iter_blocks()`` then reads blocks in file order with ``pread`` and checks each one's header
and stored-bytes digest against the index (no decompression: the merge fast path);
``iter_events()`` also decodes each block and proves every event against the index.  Given a
``RunningAdler32``, ``iter_blocks`` feeds it every byte of the file in order, so a full pass
yields the whole-file adler32 without reading anything twice.

Memory is one block plus the block table (48 bytes a block), whatever the number of events: the
index is checked piece by piece as it is read (``format.check_index``) and its event columns are
read back when asked for, a slice at a time (``event_slice``, ``iter_event_chunks``; ``events``
loads them whole, for callers that want a whole small file's table).  ``release()`` closes the
file but keeps what was read, and the next read opens it again, refusing a file that changed
in between: a merge of 5,000 inputs holds a few open at a time, not 5,000.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from ..blocks import check_stored_block, decode_block
from ..checksums import RunningAdler32, adler32
from ..errors import EngineError, InputError, LayoutError, TruncatedFile
from ..pool import BufferPool, bounded_map
from ..format import (
    BLOCK_HEADER_SIZE,
    HEADER_MAGIC,
    HEADER_SIZE,
    EVENT_COLUMNS,
    INDEX_CHUNK_EVENTS,
    TRAILER_SIZE,
    BlockHeader,
    EventTable,
    Index,
    check_index,
    event_column_offsets,
    parse_block_header,
    parse_header,
    parse_metadata,
    parse_trailer,
)


# Buffers for check_blocks, shared by every reader of the process: each is leased for one block
# and given back at once, so they stay warm in the CPU cache and are never allocated per file.
_CHECK_BUFFERS = BufferPool(8)


class RawBlock(NamedTuple):
    """One block as stored (header and data, contiguous): what a merge copies verbatim."""

    number: int
    offset: int
    header: BlockHeader
    stored: bytes
    events: EventTable
    lease: object = None      # the pool buffer holding ``stored`` (``iter_blocks(pool=...)``): release it
    adler32: int | None = None  # of ``stored``, when ``iter_blocks`` was given a running adler32

    @property
    def header_bytes(self) -> memoryview:
        return memoryview(self.stored)[:BLOCK_HEADER_SIZE]

    @property
    def data(self) -> memoryview:
        """The stored (compressed) bytes, without copying them out of ``stored``."""
        return memoryview(self.stored)[BLOCK_HEADER_SIZE:]

    @property
    def size(self) -> int:
        return len(self.stored)


class Event(NamedTuple):
    run: int
    event: int
    payload: memoryview


class TmbReader:
    MAGIC = HEADER_MAGIC
    SIGNATURE = HEADER_MAGIC[:4]   # b"\x89TMB"
    FORMAT = "tmb"

    def __init__(self, path):
        self.path = Path(path)
        from . import check_regular_file

        self._fd = -1
        self._closed = False
        self._identity = None
        self._events: EventTable | None = None
        check_regular_file(self.path)   # a FIFO would block the open below
        try:
            self._open_fd()
            self._open()
        except EngineError as exc:
            self.close()
            raise exc.with_path(self.path)
        except BaseException:
            self.close()
            raise

    def _open_fd(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            from ..errors import InputNotFound

            raise InputNotFound("no such file", path=self.path)
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror or exc}", path=self.path)
        st = os.fstat(fd)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self._identity is not None and identity != self._identity:
            os.close(fd)
            raise InputError("file changed since it was opened (size, modification time or inode differ)",
                             path=self.path)
        self._identity = identity
        self._fd = fd

    def _ready_fd(self) -> int:
        """The open descriptor, opening the file again after ``release()``."""
        if self._fd < 0:
            if self._closed:
                raise InputError("file is closed", path=self.path)
            self._open_fd()
        return self._fd

    def _open(self) -> None:
        self.file_size = self._identity[2]
        head = self._pread(HEADER_SIZE, 0)
        self.header = parse_header(head, self.file_size)
        meta_bytes = self._pread(self.header.metadata_length, HEADER_SIZE)
        if len(meta_bytes) != self.header.metadata_length:
            raise TruncatedFile("file ends inside the metadata", region="metadata", offset=HEADER_SIZE)
        self.metadata = parse_metadata(meta_bytes, self.header)
        self.data_start = HEADER_SIZE + self.header.metadata_length
        self._head_bytes = head + meta_bytes
        trailer_bytes = self._pread(TRAILER_SIZE, max(self.file_size - TRAILER_SIZE, 0))
        self.trailer = parse_trailer(trailer_bytes, self.file_size, self.data_start)
        blocks, nevents = check_index(lambda at, n: self._pread(n, at), offset=self.trailer.index_offset,
                                      length=self.trailer.index_length, digest=self.trailer.index_digest,
                                      data_start=self.data_start)
        if (len(blocks), nevents) != (self.trailer.block_count, self.trailer.event_count):
            raise LayoutError(f"index holds {len(blocks)} blocks and {nevents} events, "
                              f"the trailer says {self.trailer.block_count} and {self.trailer.event_count}",
                              region="index", offset=self.trailer.index_offset)
        self._blocks = blocks
        self._column_offsets = event_column_offsets(self.trailer.index_offset, len(blocks), nevents)

    def _pread(self, length: int, offset: int) -> bytes:
        try:
            return os.pread(self._ready_fd(), length, offset)
        except OSError as exc:
            raise InputError(f"read error at offset {offset}: {exc.strerror or exc}", path=self.path)

    # -- what the file says about itself ---------------------------------------------------
    @property
    def uuid(self) -> uuidlib.UUID:
        return self.header.uuid

    @property
    def blocks(self) -> np.ndarray:
        return self._blocks

    @property
    def events(self) -> EventTable:
        """The whole event table, read on first use and kept (until ``release()``): for small
        files; a merge reads slices (``event_slice``) and never holds a whole table."""
        if self._events is None:
            self._events = self.event_slice(0, self.event_count)
        return self._events

    @property
    def index(self) -> Index:
        return Index(self._blocks, self.events)

    def event_slice(self, start: int, stop: int) -> EventTable:
        """Events ``start`` to ``stop`` (exclusive) of the index, read from the file (one read per
        column; the index was checked whole when the file was opened)."""
        if self._events is not None:
            return self._events.slice(start, stop)
        start, stop = max(0, start), min(stop, self.event_count)
        count = max(stop - start, 0)
        columns = []
        for (_, dtype), at in zip(EVENT_COLUMNS, self._column_offsets):
            size = np.dtype(dtype).itemsize
            raw = self._pread(count * size, at + start * size)
            if len(raw) != count * size:
                raise TruncatedFile("file ends inside the index", region="index", offset=at + start * size)
            columns.append(np.frombuffer(raw, dtype=dtype))
        return EventTable(*columns)

    def iter_event_chunks(self, chunk: int = INDEX_CHUNK_EVENTS):
        """The event table in slices of at most ``chunk`` events, in order."""
        for start in range(0, self.event_count, chunk):
            yield self.event_slice(start, start + chunk)

    def runs(self) -> list[int]:
        """The run numbers present, sorted (read through the index a chunk at a time)."""
        found: set[int] = set()
        for part in self.iter_event_chunks():
            found.update(np.unique(part.run).tolist())
        return sorted(found)

    @property
    def event_count(self) -> int:
        return self.trailer.event_count

    @property
    def block_count(self) -> int:
        return self.trailer.block_count

    @property
    def index_offset(self) -> int:
        return self.trailer.index_offset

    @property
    def head_bytes(self) -> bytes:
        """Header and metadata, exactly as stored."""
        return self._head_bytes

    @property
    def tail_bytes(self) -> bytes:
        """Index and trailer, exactly as stored (read whole: ``feed_tail`` streams them)."""
        return self._pread(self.file_size - self.index_offset, self.index_offset)

    def feed_tail(self, adler: RunningAdler32, piece: int = 4 << 20) -> None:
        """Feed the index and trailer to ``adler``, read a piece at a time."""
        for at in range(self.index_offset, self.file_size, piece):
            data = self._pread(min(piece, self.file_size - at), at)
            if not data:
                raise TruncatedFile("file ends inside the index", region="index", offset=at)
            adler.update(data)

    # -- streaming -------------------------------------------------------------------------
    def read_block(self, number: int) -> RawBlock:
        """Read and fast-check one block (header vs index, stored-bytes digest)."""
        entry = self.blocks[number]
        raw = self._pread(BLOCK_HEADER_SIZE + int(entry["compressed_length"]), int(entry["offset"]))
        return self._checked_block(number, raw)

    def _read_leased(self, number: int, pool: BufferPool) -> RawBlock:
        entry = self.blocks[number]
        size = BLOCK_HEADER_SIZE + int(entry["compressed_length"])
        lease = pool.lease(size)
        try:
            got = self._preadv(memoryview(lease.buffer)[:size], int(entry["offset"]))
            return self._checked_block(number, memoryview(lease.buffer)[:got])._replace(lease=lease)
        except BaseException:
            lease.release()
            raise

    def _checked_block(self, number: int, raw, *, with_events: bool = True) -> RawBlock:
        entry = self.blocks[number]
        offset = int(entry["offset"])
        region = f"block {number}"
        try:
            if len(raw) != BLOCK_HEADER_SIZE + int(entry["compressed_length"]):
                raise TruncatedFile("file ends inside the block", region=region, offset=offset)
            header = parse_block_header(raw, region=region, offset=offset)
            check_stored_block(header, entry, memoryview(raw)[BLOCK_HEADER_SIZE:], region=region, offset=offset)
        except EngineError as exc:
            raise exc.with_path(self.path)
        first = int(entry["first_event"])
        events = self.event_slice(first, first + header.event_count) if with_events else None
        return RawBlock(number, offset, header, raw, events)

    def iter_blocks(self, adler: RunningAdler32 | None = None, *, pool: BufferPool | None = None) -> Iterator[RawBlock]:
        """Every block in file order, each checked without decompression, with bytes of its own.

        With ``adler``, every byte of the file is fed to it in order (head, blocks, tail), so
        once the loop ends it holds the whole file's adler32 and size; each block carries its
        own adler32 (``block.adler32``), so a writer copying it need not hash it again.  With ``pool``, each block
        is read into a buffer leased from it (``block.lease``), which the consumer releases when
        done with the block: no allocation per block.
        """
        if adler is not None:
            adler.update(self._head_bytes)
        for number in range(self.block_count):
            block = self.read_block(number) if pool is None else self._read_leased(number, pool)
            if adler is not None:
                block = block._replace(adler32=adler32(block.stored))
                adler.append(block.adler32, len(block.stored))
            yield block
        if adler is not None:
            self.feed_tail(adler)

    def check_blocks(self, adler: RunningAdler32 | None = None, *, threads: int = 2) -> Iterator[BlockHeader]:
        """Check every block (header, agreement with the index, stored-bytes digest) without keeping
        its bytes: what verification needs.  Yields each block's header, in file order.

        ``threads`` workers each lease a buffer, read a whole block into it, check and hash it at
        once (while it is still in the CPU cache, with the GIL released) and give the buffer back:
        a handful of hot buffers instead of a fresh allocation per block.  With ``adler``,
        per-block checksums are combined in order into the whole file's.
        """
        if adler is not None:
            adler.update(self._head_bytes)
        if self.block_count:
            self._ready_fd()   # opened before the threads share it
            sizes = self.blocks["compressed_length"].astype(np.int64) + BLOCK_HEADER_SIZE

            def check(number: int):
                lease = _CHECK_BUFFERS.lease(int(sizes[number]))
                try:
                    view = memoryview(lease.buffer)[:int(sizes[number])]
                    got = self._preadv(view, int(self.blocks["offset"][number]))
                    block = self._checked_block(number, view[:got], with_events=False)
                    return block.header, (adler32(block.stored) if adler is not None else 0), got
                finally:
                    lease.release()

            for header, block_adler, size in bounded_map(check, range(self.block_count), threads=threads,
                                                         in_flight=2 * threads, pool_always=True):
                if adler is not None:
                    adler.append(block_adler, size)
                yield header
        if adler is not None:
            self.feed_tail(adler)

    def _preadv(self, view: memoryview, offset: int) -> int:
        try:
            return os.preadv(self._ready_fd(), [view], offset)
        except OSError as exc:
            raise InputError(f"read error at offset {offset}: {exc.strerror or exc}", path=self.path)

    def decode(self, block: RawBlock):
        """Decompress a block and prove its events against the index."""
        region = f"block {block.number}"
        try:
            decoded = decode_block(block.header, block.data, region=region, offset=block.offset,
                                   expected=block.events)
        except EngineError as exc:
            raise exc.with_path(self.path)
        return decoded

    def iter_events(self) -> Iterator[Event]:
        """Every event, decoded and checked: (run, event, payload)."""
        for block in self.iter_blocks():
            decoded = self.decode(block)
            for i in range(len(decoded.events)):
                yield Event(int(decoded.events.run[i]), int(decoded.events.event[i]), decoded.payload(i))

    # -- lifetime --------------------------------------------------------------------------
    def release(self) -> None:
        """Close the file and drop the event table, keeping what was read: the next read opens the
        file again (and refuses it if it changed meanwhile)."""
        self._events = None
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        self._closed = True
        self.release()

    def __enter__(self) -> "TmbReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


READER = TmbReader
