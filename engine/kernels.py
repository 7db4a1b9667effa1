"""Per-event loops compiled with numba: framing records into blocks, walking them back, digests.

Strategy: Python handles blocks; anything that has to visit every event runs here, in nopython
mode with the GIL released, so threads can run these kernels on all cores.  Payload digests
call the xxh3-64 function of the C library inside the ``xxhash`` package: loading it with
llvmlite and declaring it as an external symbol (rather than a ctypes pointer) lets numba cache
the compiled kernels on disk, so a new process pays no compilation.  Where numba cannot cache
beside the package or in the user's cache folder (a read-only installation and no writable
home), ``choose_cache_folder`` picks a private folder in the temporary folder, or no cache.

``zstd_frame_end`` walks the block headers of a zstd frame (never its contents) to find where
the frame ends, so a block's stored bytes can be required to be exactly one frame before any
of it is decoded.

Walking a block reports the first framing error as a status code and byte offset instead of
raising (numba cannot raise rich exceptions); ``engine.blocks`` turns that into a
``FramingError``.  Importing this module imports numba: import it only where events are
touched, never on the fast path.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def _usable_folder(folder: Path, *, private: bool = False) -> bool:
    """Can numba keep its cache in ``folder``?  (What numba itself tries: create it, create a file.)
    A ``private`` folder (in the shared temporary folder) must also be ours and closed to others,
    as a cache is code we load."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        if private:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return False
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def choose_cache_folder(package: Path, user: Path, fallback: Path) -> tuple[bool, str | None]:
    """Where numba caches compiled kernels: (cache at all, folder to set as ``NUMBA_CACHE_DIR``).

    numba's own choice is the package's ``__pycache__``, then the user's cache folder; with
    neither writable (a read-only installation, no writable home) it refuses to compile a
    cached function at all.  Then a private folder under the temporary folder is used, and if
    even that fails the kernels are compiled without a cache (each process compiles again).
    ``NUMBA_CACHE_DIR`` set by the user always wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True, None
    if _usable_folder(package) or _usable_folder(user):
        return True, None
    if _usable_folder(fallback, private=True):
        return True, str(fallback)
    return False, None


_CACHE, _CACHE_DIR = choose_cache_folder(
    Path(__file__).parent / "__pycache__",
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba",
    Path(tempfile.gettempdir()) / f"tmbmerge-numba-cache-{os.getuid()}",
)
if _CACHE_DIR is not None:
    os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR

import llvmlite.binding as llvm  # noqa: E402  (after NUMBA_CACHE_DIR is settled)
import numba  # noqa: E402
import numpy as np  # noqa: E402
import xxhash._xxhash  # noqa: E402
from numba import types  # noqa: E402

from .format import RECORD_HEADER_SIZE  # noqa: E402

if _CACHE_DIR is not None:
    # numba may have been imported (and configured) before us; its config module sets its
    # attributes at run time, so mypy cannot see CACHE_DIR
    numba.config.CACHE_DIR = _CACHE_DIR  # type: ignore[attr-defined]

llvm.load_library_permanently(xxhash._xxhash.__file__)
_xxh3_64 = types.ExternalFunction("XXH3_64bits", types.uint64(types.voidptr, types.uintp))

WALK_OK = 0
WALK_SHORT_HEADER = 1  # a record header runs past the end of the block
WALK_SHORT_PAYLOAD = 2  # a payload runs past the end of the block
WALK_COUNT_MISMATCH = 3  # the records do not number what the header says
WALK_MESSAGES = {
    WALK_SHORT_HEADER: "record header runs past the end of the block",
    WALK_SHORT_PAYLOAD: "record payload runs past the end of the block",
    WALK_COUNT_MISMATCH: "block holds a different number of records than its header says",
}


@numba.njit(nogil=True, cache=_CACHE)
def frame_records(runs, events, lengths, payloads, payload_starts, out):
    """Write records (16-byte header + payload) for events ``payloads[start:start+length]`` into
    ``out``.

    ``out`` must be exactly ``sum(lengths) + 16 * n`` bytes. Returns the xxh3-64 of each payload.
    """
    n = runs.shape[0]
    digests = np.empty(n, dtype=np.uint64)
    pos = 0
    for i in range(n):
        run = runs[i]
        ev = events[i]
        ln = lengths[i]
        for k in range(4):
            out[pos + k] = (run >> (8 * k)) & 0xFF
        for k in range(8):
            out[pos + 4 + k] = (ev >> np.uint64(8 * k)) & np.uint64(0xFF)
        for k in range(4):
            out[pos + 12 + k] = (ln >> (8 * k)) & 0xFF
        pos += 16
        start = payload_starts[i]
        out[pos : pos + ln] = payloads[start : start + ln]
        digests[i] = _xxh3_64(out[pos:].ctypes.data, ln)
        pos += ln
    return digests


@numba.njit(nogil=True, cache=_CACHE)
def walk_records(buf, expected_count):
    """Walk the records of a decompressed block.

    Returns (status, error_offset, runs, events, payload_offsets, lengths, digests); on error the
    arrays are filled only up to the failing record.
    """
    n = expected_count
    runs = np.zeros(n, dtype=np.uint32)
    events = np.zeros(n, dtype=np.uint64)
    offsets = np.zeros(n, dtype=np.uint64)
    lengths = np.zeros(n, dtype=np.uint32)
    digests = np.zeros(n, dtype=np.uint64)
    size = buf.shape[0]
    pos = 0
    i = 0
    while pos < size:
        if i >= n:
            return WALK_COUNT_MISMATCH, pos, runs, events, offsets, lengths, digests
        if pos + 16 > size:
            return WALK_SHORT_HEADER, pos, runs, events, offsets, lengths, digests
        run = np.uint32(0)
        for k in range(4):
            run |= np.uint32(buf[pos + k]) << np.uint32(8 * k)
        ev = np.uint64(0)
        for k in range(8):
            ev |= np.uint64(buf[pos + 4 + k]) << np.uint64(8 * k)
        ln = np.uint32(0)
        for k in range(4):
            ln |= np.uint32(buf[pos + 12 + k]) << np.uint32(8 * k)
        if pos + 16 + ln > size:
            return WALK_SHORT_PAYLOAD, pos, runs, events, offsets, lengths, digests
        runs[i] = run
        events[i] = ev
        lengths[i] = ln
        offsets[i] = pos + 16
        digests[i] = _xxh3_64(buf[pos + 16 :].ctypes.data, ln)
        pos += 16 + ln
        i += 1
    if i != n:
        return WALK_COUNT_MISMATCH, pos, runs, events, offsets, lengths, digests
    return WALK_OK, pos, runs, events, offsets, lengths, digests


ZSTD_BLOCK_MAX = 1 << 17  # no zstd block holds more than 128 KiB (RFC 8878, Block_Maximum_Size)
FRAME_CUT_SHORT = -1  # a zstd block header or block runs past the end of the bytes
FRAME_BAD_BLOCK = -2  # a reserved block type, or a block over the 128 KiB maximum


@numba.njit(nogil=True, cache=_CACHE)
def zstd_frame_end(buf, start):
    """Where the zstd frame whose first block header is at ``start`` ends (after its last block,
    before an optional content checksum), or ``FRAME_CUT_SHORT`` / ``FRAME_BAD_BLOCK``.

    Only the 3-byte block headers are read (RFC 8878 3.1.1.2): raw and compressed blocks occupy
    their ``Block_Size`` bytes, an RLE block one byte.
    """
    size = buf.shape[0]
    pos = start
    while True:
        if pos + 3 > size:
            return FRAME_CUT_SHORT
        word = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8) | (np.int64(buf[pos + 2]) << 16)
        last = word & 1
        kind = (word >> 1) & 3
        length = word >> 3
        pos += 3
        if kind == 3 or length > ZSTD_BLOCK_MAX:
            return FRAME_BAD_BLOCK
        pos += 1 if kind == 1 else length
        if pos > size:
            return FRAME_CUT_SHORT
        if last:
            return pos


assert RECORD_HEADER_SIZE == 16  # the kernels hard-code the record header layout
