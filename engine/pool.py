"""Threads and buffers shared by the engine: an ordered bounded parallel map, a pool of buffers.

zstd decompression, pread, and the numba kernels all release the GIL, so a few threads keep
every core busy without the cost of processes.  ``bounded_map`` keeps at most ``in_flight``
items pending (bounded memory: each item may hold a block of several MiB) and yields results
in input order, so callers can stream.  With one thread it runs inline, with no pool at all.
``BufferPool`` lends a few large buffers over and over (see its docstring for why).
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    threads: int,
    in_flight: int | None = None,
    pool_always: bool = False,
) -> Iterator[R]:
    """``fn`` over ``items`` on ``threads`` threads, results in order, at most ``in_flight``
    pending.

    One thread runs inline unless ``pool_always`` (work that should run beside the caller).
    """
    if threads <= 1 and not pool_always:
        for item in items:
            yield fn(item)
        return
    limit = in_flight or 2 * threads
    pending: deque = deque()
    from concurrent.futures import ThreadPoolExecutor  # imports logging: off a merge's start-up

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="tmb-work") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class PoolClosed(Exception):
    """The buffer pool was closed while waiting for a buffer (the work is being abandoned)."""


MIN_BUFFER_BYTES = 5 << 20  # a 4 MiB block compressed, with its header and zstd's worst case


def anonymous_buffer(size: int):
    """A writable buffer of ``size`` bytes mapped straight from the kernel: unlike a large
    bytearray, whose memory the C allocator keeps in its heap once freed, it is returned to the
    system the moment the last reference to it goes."""
    return mmap.mmap(-1, max(size, 1))


class BufferPool:
    """A fixed number of reusable byte buffers, lent out and given back.

    Blocks of several MiB read with a fresh allocation each, and freed in another thread, are
    kept by the C allocator's arenas: a merge's memory then grows with its size (measured: 343 MB
    peak for 10 GB).  Lending a few buffers over and over keeps it flat, and spares the page
    faults of new memory.  ``lease`` waits while all buffers are out (back-pressure); ``close``
    wakes every waiter with ``PoolClosed``.
    """

    def __init__(self, count: int):
        self._count = count
        self._made = 0
        self._free: list = []
        self._cond = threading.Condition()
        self._closed = False

    def lease(self, size: int) -> Lease:
        """A buffer of at least ``size`` bytes, waiting while every buffer is lent."""
        with self._cond:
            while not self._free and self._made >= self._count:
                if self._closed:
                    raise PoolClosed()
                self._cond.wait(0.1)
            if self._closed:
                raise PoolClosed()
            if self._free:
                buffer = self._free.pop()
            else:
                self._made += 1
                buffer = b""
        if len(buffer) < size:  # grow once, with room: block sizes vary from file to file
            buffer = anonymous_buffer(max(MIN_BUFFER_BYTES, -(-size * 5 // 4 // (1 << 20)) << 20))
        return Lease(self, buffer)

    def _give_back(self, buffer) -> None:
        with self._cond:
            self._free.append(buffer)
            self._cond.notify()

    def close(self) -> None:
        """Refuse further leases and wake whoever waits for one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Lease:
    """One lent buffer, returned to its pool by ``release`` (once)."""

    __slots__ = ("buffer", "_pool")

    def __init__(self, pool: BufferPool, buffer):
        self.buffer = buffer
        self._pool: BufferPool | None = pool

    def release(self) -> None:
        """Give the buffer back to its pool (again is harmless)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._give_back(self.buffer)
