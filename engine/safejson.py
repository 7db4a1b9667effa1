"""JSON from files we do not trust (embedded metadata, sidecars), parsed with limits.

``json.loads`` alone lets a hostile document crash or exhaust a caller: nesting 1,000 deep
raises ``RecursionError``, a 5,000-digit integer ``ValueError`` (Python's integer-string limit),
``NaN`` and ``1e999`` give values no field may hold, and a lone surrogate (``"\\ud800"``) parses
into a string that cannot be encoded again, so it fails later, far from the file (writing a
sidecar, a catalogue row, a file name).  ``parse_json`` refuses all of these up front with a
``MetadataError`` saying what and where; the caller adds the file.  Sizes are bounded by the
caller before the bytes are read (``format.MAX_METADATA_BYTES``, ``metadata.MAX_SIDECAR_BYTES``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import MetadataError

MAX_DEPTH = 32  # objects and arrays nested in each other (SAM metadata needs 3)
MAX_NUMBER_DIGITS = 40  # digits of one number: every integer field is 64-bit
MAX_STRING_CHARS = 1 << 16


def parse_json(data: bytes | str, *, what: str) -> Any:
    """The JSON value in ``data`` (UTF-8), or a ``MetadataError`` naming ``what`` and the
    problem."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MetadataError(
                f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        value = json.loads(data, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise MetadataError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise MetadataError(f"{what} nests objects or arrays more than {MAX_DEPTH} deep") from None
    except _Refused as exc:
        raise MetadataError(f"{what}: {exc}") from None
    _check_tree(value, what)
    return value


class _Refused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _Refused(f"a number of {len(text)} digits (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_DIGITS})")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of range")
    return value


def _constant(text: str):
    raise _Refused(f"{text} is not a JSON value")


def _check_tree(value: Any, what: str) -> None:
    """Depth, and strings (keys included) that are valid Unicode and not absurdly long; no
    recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item, what)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise MetadataError(f"{what} nests objects or arrays more than {MAX_DEPTH} deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key, what)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_string(text: str, what: str) -> None:
    if len(text) > MAX_STRING_CHARS:
        raise MetadataError(
            f"{what} holds a string of {len(text)} characters (at most {MAX_STRING_CHARS})"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MetadataError(
            f"{what} holds a lone surrogate (\\u{ord(text[_surrogate(text)]):04x}), not Unicode "
            "text"
        ) from None


def _surrogate(text: str) -> int:
    return next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
