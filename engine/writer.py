"""The streaming TMB writer: events or verbatim blocks in, one complete, checksummed file out.

Strategy: the writer opens a temporary file in the destination folder and writes the header
and metadata at once.  Events are buffered until a block reaches its target uncompressed size,
then framed, digested and compressed (optionally on a small thread pool, a bounded number of
blocks in flight, written in order).  Verbatim blocks from another file (the merge fast path)
go straight through.  Every byte written also feeds a running adler32 and size, so the
catalogue checksum is known at close with no second pass, and the disk write of all but
the last few tens of MB is started as the file grows (``fsutil.Writeback``; with
``drop_behind``, those bytes also leave the page cache once written; both only when the file
is to be fsynced).  ``close()`` writes index and
trailer, fsyncs, and renames into place (refusing to replace an existing file unless asked);
an exception inside ``with TmbWriter(...)`` removes the temporary file and leaves nothing at
the destination.  Memory is bounded by the blocks in flight: the index's event entries go to an
``EventSpool`` (in memory up to a bound, then a temporary file beside the output) until the index
is written.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xxhash

from .blocks import BuiltBlock, build_block
from .checksums import RunningAdler32, format_adler32, xxh3_64
from .codecs import codec_by_name
from .errors import OutputExists, UsageError, output_error
from .format import (
    DEFAULT_BLOCK_BYTES,
    FORMAT_VERSION,
    MAX_BLOCK_BYTES,
    MAX_PAYLOAD_BYTES,
    RECORD_HEADER_SIZE,
    BlockHeader,
    EventTable,
    Trailer,
    block_table,
    index_parts,
    pack_block_header,
    pack_header,
    pack_metadata,
    pack_trailer,
)
from .fsutil import Writeback, fsync_dir, publish, remove_quietly, temporary_path
from .metadata import now_iso
from .spool import EventSpool


class WrittenBlock(NamedTuple):
    """A block as it went into the file: its number, offset, header and events, and the caller's
    ``origin`` of a block written verbatim (None for blocks joined from several)."""

    number: int
    offset: int
    header: BlockHeader
    events: EventTable
    origin: object = None


class WriteResult(NamedTuple):
    """A finished file: path, size, adler32, counts, UUID and event range."""

    path: Path
    file_size: int
    adler32: int
    event_count: int
    block_count: int
    uuid: uuidlib.UUID
    first_event: int | None
    last_event: int | None
    runs: list[int]

    @property
    def checksum(self) -> str:
        """The file's adler32 as the catalogue writes it."""
        return format_adler32(self.adler32)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Offset of each payload in the concatenation of all of them."""
    starts = np.zeros(len(lengths), dtype=np.uint64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


class TmbWriter:
    """Write one TMB file.  Use as a context manager; see the module docstring."""

    def __init__(
        self,
        path,
        *,
        metadata: dict | None = None,
        codec: str = "zstd",
        level: int | None = None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        threads: int = 1,
        overwrite: bool = False,
        file_uuid: uuidlib.UUID | None = None,
        fsync: bool = True,
        drop_behind: bool = False,
    ):
        self.path = Path(path)
        if not (RECORD_HEADER_SIZE < block_bytes <= MAX_BLOCK_BYTES):
            raise UsageError(f"block size {block_bytes} out of range 17..{MAX_BLOCK_BYTES}")
        if not self.path.parent.is_dir():
            raise UsageError(f"output folder {self.path.parent} does not exist", path=self.path)
        if self.path.exists() and not overwrite:
            raise OutputExists("output exists (use overwrite=True to replace it)", path=self.path)
        self.codec = codec_by_name(codec, level)
        self.block_bytes = block_bytes
        self.overwrite = overwrite
        self.fsync = fsync
        self.uuid = file_uuid or uuidlib.uuid4()
        meta = dict(metadata or {})
        meta.setdefault("file_name", self.path.name)
        meta.setdefault("created", now_iso())  # honours SOURCE_DATE_EPOCH
        meta["format_version"] = FORMAT_VERSION
        self.metadata = meta
        self._adler = RunningAdler32()
        self._blocks: list[tuple] = []  # (offset, first_event, BlockHeader) of each block written
        self._spool = EventSpool(directory=self.path.parent)
        self._event_count = 0
        self._event_range: tuple[int, int] | None = None  # smallest and largest event number
        self._runs: set[int] = set()
        self._pending_runs: list[int] = []
        self._pending_events: list[int] = []
        self._pending_payloads: list[bytes] = []
        # (runs, events, lengths, payloads) left over by write_batch
        self._pending_batch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pending_bytes = 0
        self._pool = None
        if threads > 1:
            from concurrent.futures import (
                ThreadPoolExecutor,
            )  # imports logging: off a merge's start-up

            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tmb-compress")
        self._in_flight: deque = deque()
        self._coalescing: list[tuple] = []  # (header, stored copy, decode, events, adler32, origin)
        self._coalescing_bytes = 0
        self._max_in_flight = 2 * threads
        self._state = "open"  # open -> finished -> published, or aborted
        self.result: WriteResult | None = None
        self.tmp_path = temporary_path(self.path)
        self._fd = -1
        self._writeback = None
        try:  # from here on, anything (a signal included) removes the temporary file by name
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self._writeback = Writeback(self._fd, drop_behind=drop_behind) if fsync else None
            metadata_bytes = pack_metadata(meta)
            self._write(pack_header(self.uuid, metadata_bytes))
            self._write(metadata_bytes)
        except OSError as exc:
            self.abort()
            raise output_error(exc, self.path, "create the output") from None
        except BaseException:
            self.abort()
            raise

    # -- events --------------------------------------------------------------------------
    def write_event(self, run: int, event: int, payload) -> None:
        """Append one event; the block is cut when it reaches the target size."""
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise UsageError(f"event payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        if (
            self._pending_bytes
            and self._pending_bytes + RECORD_HEADER_SIZE + len(payload) > self.block_bytes
        ):
            self._cut_pending()
        self._pending_runs.append(run)
        self._pending_events.append(event)
        self._pending_payloads.append(payload)
        self._pending_bytes += RECORD_HEADER_SIZE + len(payload)

    def write_batch(self, runs, events, lengths, payloads) -> None:
        """Append many events at once: payload i is the next ``lengths[i]`` bytes of ``payloads``.

        Blocks are cut at the target size with no Python loop per event; events that do not fill
        a last block stay pending (copied) and join the next batch, so batch boundaries never
        make short blocks.
        """
        runs = np.asarray(runs, dtype=np.uint32)
        events = np.asarray(events, dtype=np.uint64)
        lengths = np.asarray(lengths, dtype=np.uint32)
        payloads = (
            np.frombuffer(payloads, dtype=np.uint8)
            if not isinstance(payloads, np.ndarray)
            else payloads
        )
        if not (len(runs) == len(events) == len(lengths)):
            raise UsageError("write_batch needs runs, events and lengths of one length")
        if int(lengths.sum(dtype=np.int64)) != len(payloads):
            raise UsageError("write_batch: payload bytes do not add up to the lengths")
        if len(lengths) and int(lengths.max()) > MAX_PAYLOAD_BYTES:
            raise UsageError(f"event payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        pending = self._take_pending()
        if pending is not None:
            runs, events, lengths, payloads = (
                np.concatenate([a, b])
                for a, b in zip(pending, (runs, events, lengths, payloads), strict=True)
            )
        starts = _starts(lengths)
        record_ends = np.cumsum(lengths.astype(np.int64) + RECORD_HEADER_SIZE)
        begin = 0
        while begin < len(lengths):
            base = record_ends[begin - 1] if begin else 0
            end = int(np.searchsorted(record_ends, base + self.block_bytes, side="right"))
            end = max(end, begin + 1)  # an event larger than the target is a block of its own
            if end == len(lengths) and record_ends[-1] - base < self.block_bytes:
                first = int(starts[begin])
                self._pending_batch = (
                    runs[begin:].copy(),
                    events[begin:].copy(),
                    lengths[begin:].copy(),
                    payloads[first:].copy(),
                )
                self._pending_bytes = int(record_ends[-1] - base)
                return
            self._submit(
                runs[begin:end], events[begin:end], lengths[begin:end], payloads, starts[begin:end]
            )
            begin = end

    def _take_pending(self):
        """The buffered events as (runs, events, lengths, payloads) arrays, or None; the buffer
        empties."""
        parts = []
        if self._pending_batch is not None:
            parts.append(self._pending_batch)
        if self._pending_runs:
            parts.append(
                (
                    np.array(self._pending_runs, dtype=np.uint32),
                    np.array(self._pending_events, dtype=np.uint64),
                    np.fromiter(
                        (len(p) for p in self._pending_payloads),
                        dtype=np.uint32,
                        count=len(self._pending_payloads),
                    ),
                    np.frombuffer(b"".join(self._pending_payloads), dtype=np.uint8),
                )
            )
        self._pending_batch = None
        self._pending_runs, self._pending_events, self._pending_payloads = [], [], []
        self._pending_bytes = 0
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(columns) for columns in zip(*parts, strict=True))

    def _cut_pending(self) -> None:
        pending = self._take_pending()
        if pending is not None:
            runs, events, lengths, payloads = pending
            self._submit(runs, events, lengths, payloads, _starts(lengths))

    def _submit(self, runs, events, lengths, payloads, starts) -> None:
        if self._pool is None:
            self._append_built(build_block(runs, events, lengths, payloads, starts, self.codec))
            return
        self._in_flight.append(
            self._pool.submit(build_block, runs, events, lengths, payloads, starts, self.codec)
        )
        while len(self._in_flight) > self._max_in_flight:
            self._append_built(self._in_flight.popleft().result())

    def _drain(self) -> None:
        while self._in_flight:
            self._append_built(self._in_flight.popleft().result())

    def _append_built(self, built: BuiltBlock) -> None:
        offset = self._adler.size
        self._write(built.header_bytes)
        self._write(built.data)
        self._record_block(offset, built.header, built.events)

    # -- verbatim blocks (merge fast path) -------------------------------------------------
    def copy_block(
        self, header: BlockHeader, stored, events: EventTable, adler32: int | None = None
    ) -> int:
        """Append a block exactly as stored elsewhere (block header and data, contiguous), with
        its events' index columns; returns its offset in the file.

        The caller has checked the block; ``events.block`` is renumbered here.  Events still
        buffered or being compressed are written first, so file order is call order.  ``adler32``
        is that of ``stored`` when the caller already hashed these very bytes (the reader does,
        as it reads them): it is combined into the file's instead of hashing them again.
        """
        self._cut_pending()
        self._drain()
        offset = self._adler.size
        self._write(stored, adler32)
        self._record_block(offset, header, events)
        return offset

    # -- small blocks, coalesced ------------------------------------------------------------
    def coalesce_block(
        self,
        header: BlockHeader,
        stored,
        events: EventTable,
        decode,
        adler32: int | None = None,
        origin=None,
    ) -> list[WrittenBlock]:
        """Take a small block (checked by the caller) to be written together with the small blocks
        next to it.  ``decode()`` gives its uncompressed record bytes, proven against ``events``
        (the caller's decoder, which raises naming the block's file); it is called only if the
        block is joined with others, and before any of it is written.

        Consecutive small blocks are joined, in order, into one block of up to the target size,
        compressed afresh with this writer's codec; a small block with no small neighbour is
        written verbatim.  Returns the blocks written by this call (``flush_coalesced`` writes the
        rest): a merge of a thousand 4 KB inputs gives a few 4 MiB blocks, not a thousand tiny ones.
        """
        written = []
        if (
            self._coalescing
            and self._coalescing_bytes + header.uncompressed_length > self.block_bytes
        ):
            written = self.flush_coalesced()
        self._coalescing.append((header, bytes(stored), decode, events, adler32, origin))
        self._coalescing_bytes += header.uncompressed_length
        if self._coalescing_bytes >= self.block_bytes:
            written += self.flush_coalesced()
        return written

    def flush_coalesced(self) -> list[WrittenBlock]:
        """Write the small blocks taken so far (joined, or verbatim if alone)."""
        pending, self._coalescing, self._coalescing_bytes = self._coalescing, [], 0
        if not pending:
            return []
        number = self.block_count
        if len(pending) == 1:
            header, stored, _, events, adler32, origin = pending[0]
            return [
                WrittenBlock(
                    number, self.copy_block(header, stored, events, adler32), header, events, origin
                )
            ]
        self._cut_pending()
        self._drain()
        records = b"".join(memoryview(part[2]()).cast("B") for part in pending)
        events = EventTable(
            *(
                np.concatenate(columns)
                for columns in zip(*(part[3].columns() for part in pending), strict=True)
            )
        )
        data = self.codec.compress(records)
        header = BlockHeader(
            self.codec.codec_id,
            len(data),
            len(records),
            len(events),
            xxh3_64(data),
            xxh3_64(records),
        )
        offset = self._adler.size
        self._write(pack_block_header(header))
        self._write(data)
        self._record_block(offset, header, events)
        return [WrittenBlock(number, offset, header, events)]

    def _record_block(self, offset: int, header: BlockHeader, events: EventTable) -> None:
        """Enter a block just written at ``offset`` in the index."""
        number = len(self._blocks)
        self._blocks.append((offset, self._event_count, header))
        self._spool.append(events.replace(block=np.full(len(events), number, dtype=np.uint32)))
        self._event_count += len(events)
        if len(events):
            low, high = int(events.event.min()), int(events.event.max())
            if self._event_range is not None:
                low, high = min(low, self._event_range[0]), max(high, self._event_range[1])
            self._event_range = (low, high)
            self._runs.update(events.runs())

    def keep_cached_from(self, needed_from) -> None:
        """With ``drop_behind``: ``needed_from()`` is the lowest offset this process has still to
        read through the page cache (the merge's read-back); nothing from there on is dropped."""
        if self._writeback is not None:
            self._writeback.needed_from = needed_from

    @property
    def block_count(self) -> int:
        """Blocks written so far."""
        return len(self._blocks)

    # -- closing ---------------------------------------------------------------------------
    def finish(self) -> WriteResult:
        """Write index and trailer and fsync, but keep the temporary name (``result.path``).

        For callers that verify before publishing: follow with ``publish()`` or ``abort()``.
        """
        if self._state != "open":
            return self._result_or_raise()
        try:
            self.flush_coalesced()
            self._cut_pending()
            self._drain()
            table = block_table(self._blocks)
            # the index goes out column by column, block table after block table: never whole in
            # memory
            index_offset = self._adler.size
            index_digest = xxhash.xxh3_64()
            for part in index_parts(table, self._event_count, self._spool.column):
                index_digest.update(part)
                self._write(part)
            index_length = self._adler.size - index_offset
            self._write(
                pack_trailer(
                    Trailer(
                        index_offset,
                        index_length,
                        index_digest.intdigest(),
                        self._event_count,
                        len(table),
                    )
                )
            )
            if self.fsync:
                os.fsync(self._fd)
            if self._writeback is not None:
                self._writeback.finished(self._adler.size)
            os.close(self._fd)
            self._fd = -1
        except OSError as exc:
            self.abort()
            raise output_error(exc, self.path, "finish the output") from None
        except BaseException:
            self.abort()
            raise
        finally:
            self._shutdown_pool()
            self._spool.close()
        self._state = "finished"
        low, high = self._event_range if self._event_range is not None else (None, None)
        self.result = WriteResult(
            self.tmp_path,
            self._adler.size,
            self._adler.value,
            self._event_count,
            len(table),
            self.uuid,
            low,
            high,
            sorted(self._runs),
        )
        return self.result

    def publish(self) -> WriteResult:
        """Give the finished file its final name (never clobbering unless ``overwrite``)."""
        if self._state == "open":
            self.finish()
        if self._state != "finished":
            return self._result_or_raise()
        placed = False
        try:
            publish(self.tmp_path, self.path, overwrite=self.overwrite)
            placed = True
            if self.fsync:
                fsync_dir(self.path.parent)
        except BaseException as exc:
            if (
                placed
            ):  # named but not made durable (e.g. EIO from the folder's fsync): take it back
                remove_quietly(self.path)
            self.abort()
            if isinstance(exc, OSError):
                raise output_error(exc, self.path, "publish the output") from None
            raise
        self._state = "published"
        self.result = self._result_or_raise()._replace(path=self.path)
        return self.result

    def _result_or_raise(self) -> WriteResult:
        if self._state == "aborted" or self.result is None:
            raise UsageError("the writer was aborted; nothing was written", path=self.path)
        return self.result

    def close(self) -> WriteResult:
        """Finish the file and publish it: index, trailer, fsync, rename into place."""
        self.finish()
        return self.publish()

    def abort(self) -> None:
        """Drop everything written so far; the destination is left untouched."""
        if self._state == "published":
            return
        self._state = "aborted"
        self._shutdown_pool(cancel=True)
        if getattr(self, "_spool", None) is not None:
            self._spool.close()
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        remove_quietly(self.tmp_path)

    def _shutdown_pool(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
            self._in_flight.clear()

    def _write(self, data, adler32: int | None = None) -> None:
        """Write all of ``data``, feeding the file's running adler32 (with ``adler32``, the
        checksum of ``data`` computed by the caller)."""
        view = memoryview(data)
        if adler32 is None:
            self._adler.update(data)
        else:
            self._adler.append(adler32, view.nbytes)
        try:
            while view.nbytes:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:  # a full disk, a quota, an I/O error: the output's fault, not ours
            raise output_error(exc, self.path) from None
        if self._writeback is not None:
            self._writeback.written(self._adler.size)

    @property
    def event_count(self) -> int:
        """Events written so far, pending ones included."""
        batch = 0 if self._pending_batch is None else len(self._pending_batch[0])
        return self._event_count + len(self._pending_runs) + batch

    def __enter__(self) -> TmbWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if getattr(self, "_state", "aborted") in ("open", "finished"):
            self.abort()
