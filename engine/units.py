"""Units, read and printed the same way by every command: "2GiB", "40TB", "1Gb", "10Gb/s", MB/s.

The one size parser of tmbmerge (``--target-size``, ``--size``, ``--volume``, ``--os-memory`` and
the Python API's ``parse_size``), so that a size means the same thing wherever it is typed.
Conventions, stated once so every report reads the same way:

- Sizes and volumes are bytes, with the unit as the user wrote it.  ``k M G T P`` are decimal
  ("2G" and "2GB" are 2e9 bytes, a "40TB" campaign is 40e12 bytes, as storage vendors and
  catalogues count); ``Ki Mi Gi Ti Pi`` are binary ("2GiB" = 2 * 2**30).  Letter case does not
  matter in a size ("2gib", "2GIB" and "2GiB" are the same); a trailing ``B`` (or ``b``) is
  optional.
- Link rates follow network usage: a lowercase ``b`` (or ``bit``, ``bps``) counts bits, an
  uppercase ``B`` counts bytes, so "1Gb" and "1Gb/s" are 1e9 bits/s = 125 MB/s, and "1GB/s" is
  1e9 bytes/s.  Rates are returned in bytes per second.
- Throughputs are printed in MB/s (1e6 bytes/s), memory in MiB, the units the field quotes.
"""

from __future__ import annotations

import re

from .errors import UsageError

_PREFIX = {
    "": 1,
    "k": 1e3,
    "m": 1e6,
    "g": 1e9,
    "t": 1e12,
    "p": 1e15,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
}

_BYTES_RE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]i?)?\s*(b(?:ytes?)?)?\s*$", re.IGNORECASE
)
_RATE_RE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtTpP]i?)?\s*(bits?|bps|b|Bps|B|bytes?)\s*(/\s*s)?\s*$"
)


def parse_size(text: str | float) -> int:
    """A size or volume in bytes: '2G' -> 2e9, '2GiB' -> 2147483648, '40TB' -> 40e12, '2gib' ->
    2147483648, 4096 -> 4096.  Raises ``UsageError`` (exit 2) for anything else, or for a size that
    is not positive."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        m = _BYTES_RE.match(str(text))
        if not m:
            raise UsageError(
                f"cannot read size {text!r} (try 2GiB, 500MB, 40TB or a number of bytes)"
            )
        value = round(float(m.group(1)) * _PREFIX[(m.group(2) or "").lower()])
    if value <= 0:
        raise UsageError(f"size {text!r} must be positive")
    return value


def parse_rate(text: str | float) -> float:
    """A link or disk rate in bytes/s: '1Gb' -> 125e6, '10Gb/s' -> 1.25e9, '10Gbps' -> 1.25e9,
    '1GB/s' -> 1e9.  A bare number is bytes/s."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _RATE_RE.match(str(text))
        if not m:
            raise UsageError(f"cannot read rate {text!r} (try 1Gb, 10Gb/s, 10Gbps or 500MB/s)")
        number, prefix, unit = float(m.group(1)), (m.group(2) or "").lower(), m.group(3)
        bits = unit in ("b", "bit", "bits", "bps")
        value = number * _PREFIX[prefix] / (8 if bits else 1)
    if value <= 0:
        raise UsageError(f"rate {text!r} must be positive")
    return value


def mb_per_s(rate: float) -> str:
    """1.234e8 -> '123.4 MB/s'."""
    return f"{rate / 1e6:,.1f} MB/s"


def mib(nbytes: float) -> str:
    """3.1e8 -> '295.6 MiB'."""
    return f"{nbytes / 2**20:,.1f} MiB"


def human_bytes(nbytes: float) -> str:
    """Decimal units for volumes: 4e13 -> '40.00 TB'."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def plural(count: int, noun: str) -> str:
    """'1 output', '2 outputs', '1,200 events': a count with its noun, in the number it takes."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
