"""The block source of a remote file: range reads ahead of the reader, several in flight.

A reader asks for one block at a time; over a link with 20 ms round trips, one 4 MiB read at a
time would leave the link idle most of the time.  Readers announce what they will read
(``will_need``: the block table's ranges, in order) and this source keeps up to ``streams``
of those reads in flight on a small thread pool (the XRootD client and requests release the
GIL while they wait), handing each one over when the reader reaches it.  Memory is bounded:
at most ``streams`` ranges are held, fetched or being fetched, at a time.  Reads nobody
announced go straight to the server.  ``read_many`` fetches several small ranges in one
round trip (an XRootD vector read) for the reader's opening reads.

Set ``TMBMERGE_REMOTE_STREAMS`` (default 8) to change the depth.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor


def streams() -> int:
    """Range reads kept in flight per remote file: ``$TMBMERGE_REMOTE_STREAMS``, default 8."""
    return max(1, int(os.environ.get("TMBMERGE_REMOTE_STREAMS", "8")))


class PrefetchingSource:
    """``engine.source`` interface (``size``, ``pread``, ``readinto``, ``read_many``,
    ``will_need``, ``current_size``, ``close``) over a protocol reader with
    ``read``/``read_many``/``size``."""

    remote = True

    def __init__(self, reader, rp):
        self._reader = reader
        self.path = rp
        self.size = reader.size
        self._depth = streams()
        self._pool = ThreadPoolExecutor(self._depth, thread_name_prefix="tmb-fetch")
        self._lock = threading.Lock()
        self._planned: deque = deque()
        self._pending: dict = {}  # offset -> (length, future)

    # -- the reader's calls ----------------------------------------------------------------
    def will_need(self, ranges) -> None:
        """(offset, length) ranges the reader is about to read, in the order it will read them."""
        with self._lock:
            for future in self._pending.values():
                future[1].cancel()
            self._pending.clear()
            self._planned = deque((int(o), int(n)) for o, n in ranges)
            self._top_up()

    def pread(self, length: int, offset: int) -> bytes:
        """``length`` bytes at ``offset``: a prefetched range if announced, else a direct read."""
        future = self._take(offset, length)
        if future is not None:
            return future.result()
        return self._reader.read(offset, length) if length else b""

    def readinto(self, view: memoryview, offset: int) -> int:
        """Read into ``view`` at ``offset`` (a copy of the range read); bytes read."""
        data = self.pread(len(view), offset)
        view[: len(data)] = data
        return len(data)

    def read_many(self, ranges) -> list[bytes]:
        """The bytes of each (offset, length) range, cut at the end of the file as ``pread``
        cuts them (a vector read past the end is an error to an XRootD server: a truncated
        file must read short, and be refused as truncated, as a local one is)."""
        ranges = [(int(o), max(0, min(int(n), self.size - int(o)))) for o, n in ranges]
        wanted = sorted({(o, n) for o, n in ranges if n})  # a short file's head is its tail
        if not wanted:
            return [b"" for _ in ranges]
        got = dict(
            zip(
                wanted,
                self._reader.read_many(wanted)
                if hasattr(self._reader, "read_many")
                else [self.pread(n, o) for o, n in wanted],
                strict=True,
            )
        )
        return [got[(o, n)] if n else b"" for o, n in ranges]

    def current_size(self) -> int:
        """The file's size on the server now."""
        return self._reader.current_size()

    def close(self) -> None:
        """Cancel what is in flight, stop the threads, close the remote file."""
        with self._lock:
            self._planned.clear()
            for _, future in self._pending.values():
                future.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._reader.close()

    # -- the window ------------------------------------------------------------------------
    def _take(self, offset: int, length: int):
        with self._lock:
            entry = self._pending.get(offset)
            if entry is None or entry[0] != length:
                return None
            del self._pending[offset]
            self._top_up()
            return entry[1]

    def _top_up(self) -> None:
        while self._planned and len(self._pending) < self._depth:
            offset, length = self._planned.popleft()
            self._pending[offset] = (length, self._pool.submit(self._reader.read, offset, length))
