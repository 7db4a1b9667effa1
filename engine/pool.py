"""Ordered, bounded parallel map on threads, for work whose heavy parts release the GIL.

zstd decompression, pread, and the numba kernels all release the GIL, so a few threads keep
every core busy without the cost of processes.  ``bounded_map`` keeps at most ``in_flight``
items pending (bounded memory: each item may hold a block of several MiB) and yields results
in input order, so callers can stream.  With one thread it runs inline, with no pool at all.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, threads: int, in_flight: int | None = None,
                pool_always: bool = False) -> Iterator[R]:
    """``fn`` over ``items`` on ``threads`` threads, results in order, at most ``in_flight`` pending.

    One thread runs inline unless ``pool_always`` (work that should run beside the caller).
    """
    if threads <= 1 and not pool_always:
        for item in items:
            yield fn(item)
        return
    limit = in_flight or 2 * threads
    pending: deque = deque()
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
