"""The per-event loop of writing, compiled with numba: framing records into a block, with digests.

Strategy: Python handles blocks; framing every event (16-byte header, payload copy, xxh3-64 of
the payload) runs here, in nopython mode with the GIL released, so the writer's threads run it
on all cores.  Payload digests call the xxh3-64 function of the C library inside the ``xxhash``
package: loading it with llvmlite and declaring it as an external symbol (rather than a ctypes
pointer) lets numba cache the compiled kernel on disk, so a new process pays no compilation.
Where numba cannot cache beside the package or in the user's cache folder (a read-only
installation and no writable home), ``choose_cache_folder`` picks a private folder in the
temporary folder, or no cache.

Importing this module imports numba (~100 MB resident, ~1 CPU-s with the cached kernel): only
writers of events import it.  Reading blocks back, decoding and merging never do; their loop
over records is ``walker``'s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .codecache import usable_folder


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
    if usable_folder(package) or usable_folder(user):
        return True, None
    if usable_folder(fallback, private=True):
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


@numba.njit(nogil=True, cache=_CACHE)
def frame_records(runs, events, lengths, payloads, payload_starts, out):
    """Write the records (16-byte header + payload ``payloads[start:start+length]``) to ``out``.

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


assert RECORD_HEADER_SIZE == 16  # the kernels hard-code the record header layout
