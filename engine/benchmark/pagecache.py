"""Page-cache state of files: how much of a file is in memory, and how to push it out.

A read figure is only meaningful if we know whether it came from the disk or from memory.
``resident_fraction`` asks the kernel (``mincore`` on a read-only mapping) which pages of a
file are cached; ``evict`` asks it to drop them (``posix_fadvise(DONTNEED)``, which works on
clean pages, so call it after ``fsync``).  Should pages stay (some filesystems ignore the
advice), ``drop_all_caches`` writes to ``/proc/sys/vm/drop_caches`` when running as root: that
empties the cache of the whole machine, so it is a last resort and its use is reported.
"""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np

COLD_THRESHOLD = 0.05  # a read with at most this fraction of pages cached counts as cold

_libc = None


def _mincore():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        _libc.mincore.restype = ctypes.c_int
    return _libc.mincore


def resident_fraction(path) -> float | None:
    """Fraction (0..1) of ``path``'s pages in the page cache, or None where the kernel won't say."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    try:
        mincore = _mincore()
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mapped:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = (ctypes.c_ubyte * pages)()
            view = np.frombuffer(mapped, dtype=np.uint8)
            try:
                if mincore(ctypes.c_void_p(view.ctypes.data), size, vector) != 0:
                    return None
            finally:
                del view  # the mapping cannot close while numpy holds a view of it
            return float(np.count_nonzero(np.ctypeslib.as_array(vector) & 1)) / pages
    except (OSError, AttributeError, ValueError):
        return None


def files_resident_fraction(paths) -> float | None:
    """Byte-weighted resident fraction of several files."""
    total = cached = 0.0
    for path in paths:
        fraction = resident_fraction(path)
        if fraction is None:
            return None
        size = os.path.getsize(path)
        total += size
        cached += fraction * size
    return cached / total if total else 1.0


def evict(path) -> None:
    """Ask the kernel to drop ``path``'s clean pages from the cache."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_all_caches() -> bool:
    """As root, drop the whole machine's clean page cache; False where that is not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def make_cold(path) -> dict:
    """Evict ``path`` and say how cold it is: {'method', 'resident_fraction', 'cold'}."""
    evict(path)
    method = "posix_fadvise(DONTNEED)"
    fraction = resident_fraction(path)
    if fraction is not None and fraction > COLD_THRESHOLD and drop_all_caches():
        method += " + drop_caches"
        fraction = resident_fraction(path)
    cold = fraction is not None and fraction <= COLD_THRESHOLD
    return {"method": method, "resident_fraction": fraction, "cold": cold}
