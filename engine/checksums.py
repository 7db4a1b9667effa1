"""Checksums: xxh3-64 digests inside files, adler32 for the catalogue, and their text forms.

Two families serve two purposes.  xxh3-64 (fast, 64-bit) protects every region of a TMB
file; it is stored in the file.  adler32 is the catalogue convention (SAM, Rucio, MetaCat,
dCache stage-out): computed over the whole file while it is written or read, and written as
``adler32:`` followed by exactly 8 lowercase, zero-padded hex digits.  The legacy ``enstore``
form (adler32 seeded with 0 instead of 1, printed in decimal) is accepted when reading
metadata and converted, which needs the file size.

adler32 comes from zlib-ng (about 3.5x stdlib zlib's speed here).  For large buffers both
hashes call the C functions of the xxhash and zlib-ng extensions through ctypes, which releases
the GIL: a thread reading the next block (``pread`` releases it too) then overlaps the hashing
of the current one instead of waiting for it.  Small buffers use the modules' own calls.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import xxhash
import xxhash._xxhash
from zlib_ng import zlib_ng

from .errors import MetadataError

ADLER_MOD = 65521
ADLER32_INITIAL = 1
NOGIL_MIN_BYTES = 1 << 16  # below this, the ctypes call costs more than holding the GIL


def _c_function(library: str, name: str, restype, argtypes):
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None  # an extension built without the symbol: the module call serves, GIL held
    function.restype, function.argtypes = restype, argtypes
    return function


_c_xxh3_64 = _c_function(
    xxhash._xxhash.__file__, "XXH3_64bits", ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_size_t]
)
_c_adler32 = _c_function(
    zlib_ng.__file__,
    "zng_adler32_z",
    ctypes.c_uint32,
    [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t],
)


def xxh3_64_function_address() -> int:
    """The address of the C function ``XXH3_64bits(const void *, size_t)`` of the xxhash package's
    library, for compiled code that hashes many small buffers (``walker``)."""
    if _c_xxh3_64 is None:
        raise RuntimeError(f"{xxhash._xxhash.__file__} does not export XXH3_64bits")
    return ctypes.cast(_c_xxh3_64, ctypes.c_void_p).value or 0


def xxh3_64(data) -> int:
    """xxh3-64 of any buffer; large ones are hashed with the GIL released."""
    if _c_xxh3_64 is not None and _nbytes(data) >= NOGIL_MIN_BYTES:
        array = np.frombuffer(data, dtype=np.uint8)
        return _c_xxh3_64(array.ctypes.data, array.size)
    return xxhash.xxh3_64_intdigest(data)


def adler32(data, value: int = ADLER32_INITIAL) -> int:
    """Update a running adler32 with ``data`` (any buffer); large ones with the GIL released."""
    if _c_adler32 is not None and _nbytes(data) >= NOGIL_MIN_BYTES:
        array = np.frombuffer(data, dtype=np.uint8)
        return _c_adler32(value, array.ctypes.data, array.size)
    return zlib_ng.adler32(data, value)


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The adler32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine), so blocks
    hashed on several threads still give the whole file's checksum."""
    rem = second_length % ADLER_MOD
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % ADLER_MOD
    sum1 += (second & 0xFFFF) + ADLER_MOD - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + ADLER_MOD - rem
    sum1 %= ADLER_MOD
    sum2 %= ADLER_MOD
    return sum1 | (sum2 << 16)


def _nbytes(data) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


class RunningAdler32:
    """adler32 and byte count of a stream, fed in order as the bytes go by."""

    __slots__ = ("value", "size")

    def __init__(self) -> None:
        self.value = ADLER32_INITIAL
        self.size = 0

    def update(self, data) -> None:
        """Feed ``data``, the next bytes of the stream."""
        self.value = adler32(data, self.value)
        self.size += _nbytes(data)

    def append(self, value: int, length: int) -> None:
        """Extend by a piece hashed elsewhere: its own adler32 (seeded with 1) and length."""
        self.value = adler32_combine(self.value, value, length)
        self.size += length

    @property
    def hexdigest(self) -> str:
        """The adler32 so far, as 8 hex digits."""
        return adler32_hex(self.value)


def digest_hex(value: int) -> str:
    """An xxh3-64 digest as 16 hex digits, the form used in messages and reports."""
    return f"{value & 0xFFFFFFFFFFFFFFFF:016x}"


def adler32_hex(value: int) -> str:
    """8 lowercase hex digits, zero-padded: the only form catalogues accept."""
    return f"{value & 0xFFFFFFFF:08x}"


def format_adler32(value: int) -> str:
    """The catalogue checksum string, e.g. ``adler32:03d6cb63``."""
    return f"adler32:{adler32_hex(value)}"


def enstore_to_adler32(enstore: int, file_size: int) -> int:
    """Convert an enstore checksum (adler32 seeded with 0) to the standard adler32 (seeded with 1).

    Seeding with 1 instead of 0 adds 1 to the low sum and, once per byte, 1 to the high sum.
    """
    s1 = ((enstore & 0xFFFF) + 1) % ADLER_MOD
    s2 = (((enstore >> 16) & 0xFFFF) + file_size) % ADLER_MOD
    return (s2 << 16) | s1


def adler32_to_enstore(value: int, file_size: int) -> int:
    """The inverse of :func:`enstore_to_adler32`."""
    s1 = ((value & 0xFFFF) - 1) % ADLER_MOD
    s2 = (((value >> 16) & 0xFFFF) - file_size) % ADLER_MOD
    return (s2 << 16) | s1


_ADLER_RE = re.compile(r"^adler32:([0-9a-fA-F]{1,8})$")
_ENSTORE_RE = re.compile(r"^enstore:([0-9]{1,10})$")


def parse_checksum(text: str, file_size: int | None = None) -> int:
    """Read one catalogue checksum string and return the standard adler32 as an int.

    Accepts ``adler32:<hex>`` (also legacy values written without their leading zeros) and
    ``enstore:<decimal>`` (needs ``file_size``).  Anything else is a ``MetadataError``.
    """
    text = text.strip()
    m = _ADLER_RE.match(text)
    if m:
        return int(m.group(1), 16)
    m = _ENSTORE_RE.match(text)
    if m:
        value = int(m.group(1))
        if value > 0xFFFFFFFF:
            raise MetadataError(f"enstore checksum {value} does not fit in 32 bits")
        if file_size is None:
            raise MetadataError("an enstore checksum needs the file size to convert to adler32")
        return enstore_to_adler32(value, file_size)
    raise MetadataError(
        f"unrecognised checksum {text!r} (want adler32:<8 hex> or enstore:<decimal>)"
    )


def adler32_from_checksums(checksums, file_size: int | None = None) -> int | None:
    """The adler32 among a metadata ``checksum`` list (either form), or None if there is none."""
    if checksums is None:
        return None
    if isinstance(checksums, str):
        checksums = [checksums]
    if not isinstance(checksums, (list, tuple)):
        raise MetadataError(f"checksum {checksums!r} is not a list of strings")
    found = None
    for text in checksums:
        if not isinstance(text, str):
            raise MetadataError(f"checksum entry {text!r} is not a string")
        kind = text.split(":", 1)[0].strip().lower()
        if kind not in ("adler32", "enstore"):
            continue  # other algorithms (md5, crc32, ...) are not ours to check
        value = parse_checksum(text, file_size)
        if found is not None and value != found:
            raise MetadataError(
                f"checksum list disagrees with itself: {format_adler32(found)} vs "
                f"{format_adler32(value)}"
            )
        found = value
    return found
