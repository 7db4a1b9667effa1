"""The native TMB reader: open a file in O(1) reads, then stream its blocks or events.

Strategy: opening reads the header and metadata at the front, the trailer and index at the
back, and validates them all (digests, bounds, block tiling): a truncated or damaged file is
refused before a single block is read.  The index becomes numpy arrays viewing the bytes read.
``iter_blocks()`` then reads blocks in file order with ``pread`` and checks each one's header
and stored-bytes digest against the index (no decompression: the merge fast path);
``iter_events()`` also decodes each block and proves every event against the index.  Given a
``RunningAdler32``, ``iter_blocks`` feeds it every byte of the file in order, so a full pass
yields the whole-file adler32 without reading anything twice.

Memory is one block plus the block table (48 bytes a block), whatever the number of events: an
index of up to ``WHOLE_INDEX_BYTES`` is read in one request with the metadata; a larger one is
checked piece by piece as it is read (``format.check_index``) and its event columns are read
back a slice at a time when asked for (``event_slice``, ``iter_event_chunks``).  ``release()``
closes the file and drops the event table but keeps the rest; the next read opens the file
again, refusing it if it changed in between: a merge of 5,000 inputs holds a few open files at a
time, not 5,000.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import ClassVar, NamedTuple

import numpy as np

from ..blocks import decode_block, read_block
from ..checksums import RunningAdler32, adler32
from ..errors import EngineError, InputError, LayoutError, TruncatedFile
from ..format import (
    BLOCK_HEADER_SIZE,
    EVENT_COLUMNS,
    HEADER_MAGIC,
    HEADER_SIZE,
    INDEX_CHUNK_EVENTS,
    TRAILER_SIZE,
    BlockHeader,
    EventTable,
    Index,
    check_index,
    event_column_offsets,
    parse_header,
    parse_index,
    parse_metadata,
    parse_trailer,
)
from ..pool import BufferPool, bounded_map

#: An index up to this size is read whole, in the same request as the metadata, and its event
#: table kept until ``release()`` (~150,000 events); a larger one is read a piece at a time.
WHOLE_INDEX_BYTES = 4 << 20


# Buffers for check_blocks, shared by every reader of the process: each is leased for one block
# and given back at once, so they stay warm in the CPU cache and are never allocated per file.
_CHECK_BUFFERS = BufferPool(8)


class RawBlock(NamedTuple):
    """One block as stored (header and data, contiguous): what a merge copies verbatim."""

    number: int
    offset: int
    header: BlockHeader
    stored: bytes
    events: EventTable | None  # None when read without its events (``with_events=False``)
    lease: object = (
        None  # the pool buffer holding ``stored`` (``iter_blocks(pool=...)``): release it
    )
    adler32: int | None = None  # of ``stored``, when ``iter_blocks`` was given a running adler32

    @property
    def header_bytes(self) -> memoryview:
        """The block header's 48 bytes, a view of ``stored``."""
        return memoryview(self.stored)[:BLOCK_HEADER_SIZE]

    @property
    def data(self) -> memoryview:
        """The stored (compressed) bytes, without copying them out of ``stored``."""
        return memoryview(self.stored)[BLOCK_HEADER_SIZE:]

    @property
    def size(self) -> int:
        """Bytes of the block as stored, header included."""
        return len(self.stored)


class Event(NamedTuple):
    """One decoded event: run, event number and payload (a view of the decoded block)."""

    run: int
    event: int
    payload: memoryview


class TmbReader:
    """The reader of TMB files (``engine.readers.Reader``): see the module docstring."""

    MAGIC: ClassVar[bytes] = HEADER_MAGIC
    SIGNATURE: ClassVar[bytes] = HEADER_MAGIC[:4]  # b"\x89TMB"
    FORMAT: ClassVar[str] = "tmb"

    def __init__(self, path):
        from ..remote import location
        from ..source import open_source

        self.path = location(path)
        self._source = None
        self._closed = False
        self._events: EventTable | None = None
        self._source = open_source(self.path)
        self._identity = _identity(self._source)
        try:
            self._open()
        except EngineError as exc:
            self.close()
            exc.with_path(self.path)
            raise
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        source = self._ready_source()
        self.file_size = source.size
        # header and trailer in one request, then the metadata and index they locate in another:
        # two round trips for a remote file.  Checks run in file order all the same.
        head, trailer_bytes = source.read_many(
            [(0, HEADER_SIZE), (max(self.file_size - TRAILER_SIZE, 0), TRAILER_SIZE)]
        )
        self.header = parse_header(head, self.file_size)
        self._head = head
        self.data_start = HEADER_SIZE + self.header.metadata_length
        try:
            self.trailer = parse_trailer(trailer_bytes, self.file_size, self.data_start)
        except EngineError:
            self._read_metadata(self._pread(self.header.metadata_length, HEADER_SIZE))
            raise
        index_at = (self.trailer.index_offset, self.trailer.index_length)
        if self.trailer.index_length <= WHOLE_INDEX_BYTES:
            meta_bytes, index_bytes = source.read_many(
                [(HEADER_SIZE, self.header.metadata_length), index_at]
            )
            self._read_metadata(meta_bytes)
            index = parse_index(
                index_bytes,
                offset=self.trailer.index_offset,
                digest=self.trailer.index_digest,
                data_start=self.data_start,
            )
            blocks, nevents, self._events = index.blocks, len(index.events), index.events
        else:
            self._read_metadata(self._pread(self.header.metadata_length, HEADER_SIZE))
            blocks, nevents = check_index(
                lambda at, n: self._pread(n, at),
                offset=index_at[0],
                length=index_at[1],
                digest=self.trailer.index_digest,
                data_start=self.data_start,
            )
        if (len(blocks), nevents) != (self.trailer.block_count, self.trailer.event_count):
            raise LayoutError(
                f"index holds {len(blocks)} blocks and {nevents} events, "
                f"the trailer says {self.trailer.block_count} and {self.trailer.event_count}",
                region="index",
                offset=self.trailer.index_offset,
            )
        self._blocks = blocks
        self._column_offsets = event_column_offsets(self.trailer.index_offset, len(blocks), nevents)

    def _read_metadata(self, meta_bytes: bytes) -> None:
        if len(meta_bytes) != self.header.metadata_length:
            raise TruncatedFile(
                "file ends inside the metadata", region="metadata", offset=HEADER_SIZE
            )
        self.metadata = parse_metadata(meta_bytes, self.header)
        self._head_bytes = self._head + meta_bytes

    def _pread(self, length: int, offset: int) -> bytes:
        return self._ready_source().pread(length, offset)

    def _ready_source(self):
        """The open source, opening the file again after ``release()`` (a changed file is
        refused)."""
        if self._source is None:
            if self._closed:
                raise InputError("file is closed", path=self.path)
            from ..source import open_source

            source = open_source(self.path)
            if _identity(source) != self._identity:
                source.close()
                raise InputError(
                    "file changed since it was opened (size, modification time or inode differ)",
                    path=self.path,
                )
            self._source = source
        return self._source

    # -- what the file says about itself ---------------------------------------------------
    @property
    def identity(self):
        """What the file was when first opened: (st_dev, st_ino, size, mtime_ns) of the open file
        for a local one, its size for a remote one."""
        return self._identity

    @property
    def uuid(self) -> uuidlib.UUID:
        """The file's UUID, from its header."""
        return self.header.uuid

    @property
    def blocks(self) -> np.ndarray:
        """The block table (``format.BLOCK_DTYPE``), checked when the file was opened."""
        return self._blocks

    @property
    def events(self) -> EventTable:
        """The whole event table, read in one request on first use and kept until ``release()``:
        for small files; a merge reads large ones a slice at a time (``event_slice``)."""
        if self._events is None:
            start = self._column_offsets[0]
            raw = self._pread(self.index_offset + self.trailer.index_length - start, start)
            columns, pos = [], 0
            for _, dtype in EVENT_COLUMNS:
                column = np.frombuffer(raw, dtype=dtype, count=self.event_count, offset=pos)
                columns.append(column)
                pos += column.nbytes
            self._events = EventTable(*columns)
        return self._events

    @property
    def index(self) -> Index:
        """The whole index: block table and event table."""
        return Index(self._blocks, self.events)

    def event_slice(self, start: int, stop: int) -> EventTable:
        """Events ``start`` to ``stop`` (exclusive) of the index: from the kept table, or read from
        the file (one read per column; the index was checked whole when the file was opened)."""
        if self._events is not None:
            return self._events.slice(start, stop)
        start, stop = max(0, start), min(stop, self.event_count)
        count = max(stop - start, 0)
        columns = []
        for (_, dtype), at in zip(EVENT_COLUMNS, self._column_offsets, strict=True):
            size = np.dtype(dtype).itemsize
            raw = self._pread(count * size, at + start * size)
            if len(raw) != count * size:
                raise TruncatedFile(
                    "file ends inside the index", region="index", offset=at + start * size
                )
            columns.append(np.frombuffer(raw, dtype=dtype))
        return EventTable(*columns)

    def iter_event_chunks(self, chunk: int = INDEX_CHUNK_EVENTS):
        """The event table in slices of at most ``chunk`` events, in order."""
        for start in range(0, self.event_count, chunk):
            yield self.event_slice(start, start + chunk)

    @property
    def event_count(self) -> int:
        """Events in the file."""
        return self.trailer.event_count

    @property
    def block_count(self) -> int:
        """Blocks in the file."""
        return self.trailer.block_count

    @property
    def index_offset(self) -> int:
        """File offset of the index (where the blocks end)."""
        return self.trailer.index_offset

    @property
    def head_bytes(self) -> bytes:
        """Header and metadata, exactly as stored."""
        return self._head_bytes

    @property
    def tail_bytes(self) -> bytes:
        """Index and trailer, exactly as stored (read whole: ``feed_tail`` streams them)."""
        return self._pread(self.file_size - self.index_offset, self.index_offset)

    def feed_tail(self, adler: RunningAdler32, piece: int = 1 << 20) -> None:
        """Feed the index and trailer to ``adler``, read a piece at a time."""
        for at in range(self.index_offset, self.file_size, piece):
            data = self._pread(min(piece, self.file_size - at), at)
            if not data:
                raise TruncatedFile("file ends inside the index", region="index", offset=at)
            adler.update(data)

    # -- streaming -------------------------------------------------------------------------
    def read_block(self, number: int) -> RawBlock:
        """Read and fast-check one block (header vs index, stored-bytes digest)."""
        return self._block(number, into=None)

    def _read_leased(self, number: int, pool: BufferPool) -> RawBlock:
        lease = pool.lease(BLOCK_HEADER_SIZE + int(self.blocks[number]["compressed_length"]))
        try:
            return self._block(number, into=lease.buffer)._replace(lease=lease)
        except BaseException:
            lease.release()
            raise

    def _block(self, number: int, *, into) -> RawBlock:
        """Block ``number`` read through the one block read (``blocks.read_block``), with the
        index entries of its events."""
        header, raw = self._read_checked(number, into)
        first = int(self.blocks[number]["first_event"])
        events = self.event_slice(first, first + header.event_count)
        return RawBlock(number, int(self.blocks[number]["offset"]), header, raw, events)

    def _read_checked(self, number: int, into):
        try:
            return read_block(self._ready_source(), self.blocks[number], number=number, into=into)
        except EngineError as exc:
            raise exc.with_path(self.path) from None

    def iter_blocks(
        self, adler: RunningAdler32 | None = None, *, pool: BufferPool | None = None
    ) -> Iterator[RawBlock]:
        """Every block in file order, each checked without decompression, with bytes of its own.

        With ``adler``, every byte of the file is fed to it in order (head, blocks, tail), so
        once the loop ends it holds the whole file's adler32 and size; each block carries its
        own adler32 (``block.adler32``), so a writer copying it need not hash it again.  With
        ``pool``, each block is read into a buffer leased from it (``block.lease``), which the
        consumer releases when done with the block: no allocation per block.
        """
        if adler is not None:
            adler.update(self._head_bytes)
        self._announce_blocks()
        if self._events is None and self.trailer.index_length <= WHOLE_INDEX_BYTES:
            _ = (
                self.events
            )  # one request for a small index, not one per column per block (remote files)
        for number in range(self.block_count):
            block = self.read_block(number) if pool is None else self._read_leased(number, pool)
            if adler is not None:
                checksum = adler32(block.stored)
                block = block._replace(adler32=checksum)
                adler.append(checksum, len(block.stored))
            yield block
        self._check_unchanged()
        if adler is not None:
            self.feed_tail(adler)

    def check_blocks(
        self, adler: RunningAdler32 | None = None, *, threads: int = 2
    ) -> Iterator[BlockHeader]:
        """Check every block (header, agreement with the index, stored-bytes digest) without keeping
        its bytes: what verification needs.  Yields each block's header, in file order.

        ``threads`` workers each lease a buffer, read a whole block into it, check and hash it at
        once (while it is still in the CPU cache, with the GIL released) and give the buffer back:
        a handful of hot buffers instead of a fresh allocation per block.  With ``adler``,
        per-block checksums are combined in order into the whole file's.
        """
        if adler is not None:
            adler.update(self._head_bytes)
        self._announce_blocks()
        if self.block_count:
            self._ready_source()  # opened before the threads share it
            sizes = self.blocks["compressed_length"].astype(np.int64) + BLOCK_HEADER_SIZE

            def check(number: int):
                lease = _CHECK_BUFFERS.lease(int(sizes[number]))
                try:
                    header, raw = self._read_checked(number, lease.buffer)
                    return header, (adler32(raw) if adler is not None else 0), len(raw)
                finally:
                    lease.release()

            for header, block_adler, size in bounded_map(
                check,
                range(self.block_count),
                threads=threads,
                in_flight=2 * threads,
                pool_always=True,
            ):
                if adler is not None:
                    adler.append(block_adler, size)
                yield header
        self._check_unchanged()
        if adler is not None:
            self.feed_tail(adler)

    def _check_unchanged(self) -> None:
        """A file whose size changed while it was read is not the file that was checked."""
        size = self._ready_source().current_size()
        if size != self.file_size:
            raise InputError(
                f"file changed size while being read (from {self.file_size} to {size} bytes)",
                path=self.path,
            )

    def _announce_blocks(self) -> None:
        """Tell the source every block is about to be read, in file order (remote read-ahead)."""
        source = self._ready_source()
        if getattr(source, "remote", False) and self.block_count:
            sizes = self.blocks["compressed_length"].astype(np.int64) + BLOCK_HEADER_SIZE
            source.will_need(zip(self.blocks["offset"].tolist(), sizes.tolist(), strict=True))

    def decode(self, block: RawBlock):
        """Decompress a block and prove its events against the index."""
        region = f"block {block.number}"
        try:
            decoded = decode_block(
                block.header, block.data, region=region, offset=block.offset, expected=block.events
            )
        except EngineError as exc:
            exc.with_path(self.path)
            raise
        return decoded

    def iter_events(self) -> Iterator[Event]:
        """Every event, decoded and checked: (run, event, payload)."""
        for block in self.iter_blocks():
            decoded = self.decode(block)
            for i in range(len(decoded.events)):
                yield Event(
                    int(decoded.events.run[i]), int(decoded.events.event[i]), decoded.payload(i)
                )

    # -- lifetime --------------------------------------------------------------------------
    def release(self) -> None:
        """Close the file and drop the event table, keeping what was read: the next read opens the
        file again (and refuses it if it changed meanwhile)."""
        self._events = None
        source = getattr(self, "_source", None)
        if source is not None:
            self._source = None
            source.close()

    def close(self) -> None:
        """Close the file for good: reading again is an error."""
        self._closed = True
        self.release()

    def __enter__(self) -> TmbReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def _identity(source):
    """What must not change between two openings of a file: (device, inode, size, mtime) for a
    local file, the size for a remote one."""
    return getattr(source, "identity", source.size)
