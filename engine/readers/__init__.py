"""Format readers, chosen by the magic bytes at the start of a file.

Every module in this package that defines ``READER`` (a class with ``MAGIC: bytes``,
``FORMAT: str``, optionally a shorter ``SIGNATURE`` that is enough to recognise the format, and
a constructor taking a path) is a reader; they are found by scanning the
package, so adding a reader is adding one file.  ``detect(path)`` returns the reader class for
a file and ``open_file(path)`` an open reader.  Readers offer the same surface as
``engine.readers.tmb.TmbReader``: header and metadata, the index as numpy arrays,
``iter_blocks()`` (stored bytes, the merge fast path) and ``iter_events()`` (decoded events).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import stat
from functools import lru_cache

from ..errors import ChecksumMismatch, InputError, NotATmbFile, TruncatedFile, input_error

PROBE_BYTES = 64  # a whole TMB header: enough to tell a damaged magic from a foreign file


@lru_cache(maxsize=1)
def registered_readers() -> tuple:
    readers = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        reader = getattr(module, "READER", None)
        if reader is not None:
            readers.append(reader)
    return tuple(readers)


def check_regular_file(path) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks until a writer
    comes, and a device or socket is no event file.  Missing or unreadable paths: input errors."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise input_error(exc, path) from None
    if stat.S_ISDIR(mode):
        raise InputError("is a directory, not a file", path=path)
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise InputError(f"is a {kind}, not a regular file", path=path)


def read_probe(path) -> bytes:
    """The first bytes of ``path``, with unreadable paths turned into one-line input errors."""
    from ..remote import is_url

    if is_url(path):
        from ..source import open_source

        source = open_source(path)
        try:
            return source.pread(min(PROBE_BYTES, source.size), 0)
        finally:
            source.close()
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            return f.read(PROBE_BYTES)
    except OSError as exc:
        raise input_error(exc, path) from None


def detect(path):
    """The reader class whose magic bytes start the file."""
    probe = read_probe(path)
    for reader in registered_readers():
        # the signature suffices: the rest of a damaged magic is the reader's to report (integrity)
        if probe.startswith(getattr(reader, "SIGNATURE", reader.MAGIC)):
            return reader
    if not probe:
        raise TruncatedFile("file is empty (0 bytes)", path=path, region="header", offset=0)
    from ..format import HEADER_MAGIC, header_with_damaged_magic

    if header_with_damaged_magic(probe):
        raise ChecksumMismatch(
            "damaged file magic (the header's digest proves a TMB header)",
            path=path,
            region="header",
            offset=0,
            expected=HEADER_MAGIC.hex(),
            actual=probe[:8].hex(),
        )
    for reader in registered_readers():
        if len(probe) < len(reader.MAGIC) and reader.MAGIC.startswith(probe):
            raise TruncatedFile(
                f"file is {len(probe)} bytes, cut inside the {reader.FORMAT} header",
                path=path,
                region="header",
                offset=0,
            )
    raise NotATmbFile("not a TMB file (unknown magic bytes)", path=path, region="header", offset=0)


def open_file(path):
    """Open ``path`` with the reader its magic bytes call for."""
    return detect(path)(path)


__all__ = ["detect", "open_file", "registered_readers"]
