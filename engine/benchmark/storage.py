"""Storage floors: sequential write with fsync, sequential read (cold or cached), plain copy.

These are what no merge can beat on a machine: a merge reads its inputs and writes one new
file, so ``concatenate`` (read the run's files in order with plain ``read`` calls, write them
into one file, fsync it) is the floor every merge mode is compared with.  Chunks are 8 MiB
(larger than a TMB block, so the floor is not handicapped by small calls), the buffers are
reused, and nothing is checksummed or parsed.  Each function returns ``{"seconds", "bytes"}``
for the timed part only (opening and unlinking files is outside it, fsync is inside).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..fsutil import Writeback

CHUNK_BYTES = 8 << 20


def _write_all(fd: int, view: memoryview) -> None:
    while view.nbytes:
        view = view[os.write(fd, view) :]


def write_sequential(path, size: int, *, chunk: int = CHUNK_BYTES) -> dict:
    """Write ``size`` bytes of incompressible data to a new file and fsync it."""
    buffer = np.random.default_rng(0xD0).integers(0, 256, chunk, dtype=np.uint8)
    view = buffer.data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        left = size
        while left > 0:
            _write_all(fd, view[: min(left, chunk)])
            left -= min(left, chunk)
        os.fsync(fd)
        seconds = time.perf_counter() - started
    finally:
        os.close(fd)
    return {"seconds": seconds, "bytes": size}


def read_sequential(path, *, chunk: int = CHUNK_BYTES) -> dict:
    """Read a whole file front to back into one reused buffer."""
    buffer = bytearray(chunk)
    total = 0
    with open(path, "rb", buffering=0) as f:
        started = time.perf_counter()
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            total += n
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": total}


def concatenate(
    inputs, output, *, chunk: int = CHUNK_BYTES, fsync: bool = True, streamed: bool = False
) -> dict:
    """The copy floor: the inputs' bytes, in order, into one new file, fsynced.  ``bytes`` counts
    input.

    ``streamed``: with the merge's own disk strategy (``fsutil.Writeback`` with drop-behind:
    writeback started a window behind, pages dropped once on their way, the whole file after
    the fsync), so that what a merge gains from it alone can be told from what its checks cost.
    """
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    total = 0
    started = time.perf_counter()
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    writeback = Writeback(fd, drop_behind=True) if streamed and fsync else None
    try:
        for path in inputs:
            with open(path, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buffer)
                    if not n:
                        break
                    _write_all(fd, view[:n])
                    total += n
                    if writeback is not None:
                        writeback.written(total)
        if fsync:
            os.fsync(fd)
            if writeback is not None:
                writeback.finished(total)
    finally:
        os.close(fd)
    return {"seconds": time.perf_counter() - started, "bytes": total}


def total_size(paths) -> int:
    """Bytes of all ``paths``."""
    return sum(Path(p).stat().st_size for p in paths)
