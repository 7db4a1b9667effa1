"""Block sources: the one way readers get a file's bytes, local or remote.

A reader asks its source (the ``Source`` protocol) for ``pread(length, offset)``,
``readinto(view, offset)`` (a block into a leased buffer, no copy) and ``read_many(ranges)``
(several small ranges at once, for opening), ``current_size()`` (to notice a file that changed
while it was read), and announces the ranges it is about to read with ``will_need``.
``LocalSource`` is the local file: ``pread``/``preadv`` on one descriptor, and ``will_need``
costs nothing (the kernel reads ahead).  Remote files (``engine.remote``) get a source that
keeps several range reads in flight ahead of the reader.  Either way every block is read and
checked by one function, ``engine.blocks.read_block``, whether a reader streams an input or a
merge reads its output back (``verify.readback``): the source only moves bytes, and turns the
operating system's errors into the one-line error of its role (an input, or the output being
read back).
"""

from __future__ import annotations

import os
import stat
from typing import Protocol

from .errors import InputError, input_error, output_error


class Source(Protocol):
    """What a reader needs of a file's bytes (see the module docstring)."""

    path: object
    size: int
    #: Whether reads cross a network (the reader then announces its blocks with ``will_need``).
    remote: bool

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        ...

    def readinto(self, view: memoryview, offset: int) -> int:
        """Read into ``view`` from ``offset``; the number of bytes read."""
        ...

    def read_many(self, ranges) -> list[bytes]:
        """The bytes of each (offset, length) range, in order."""
        ...

    def current_size(self) -> int:
        """The file's size now."""
        ...

    def will_need(self, ranges) -> None:
        """(offset, length) ranges about to be read, in the order they will be."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


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


class LocalSource:
    """A local file: ``pread``/``preadv`` on one descriptor.

    Errors name ``name`` (default ``path``: a merge reads its output back under a temporary
    name but reports the name the user gave).  An input's ``OSError`` becomes the
    ``InputError`` of its kind; with ``output=True`` (the read-back of a merge's own output) it
    becomes an ``OutputError``: the destination, not an input, failed."""

    remote = False

    def __init__(self, path, *, name=None, output: bool = False):
        self.path = path
        self.name = path if name is None else name
        self._output = output
        self._fd = -1
        if not output:
            check_regular_file(path)  # a FIFO would block the open below
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise self._error(exc, "open") from None
        st = os.fstat(self._fd)
        self.size = st.st_size
        #: (st_dev, st_ino, size, mtime_ns): to recognise the file when it is opened again
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _error(self, exc: OSError, doing: str = "read", **where):
        if self._output:
            return output_error(exc, self.name, "read the output back", **where)
        return input_error(exc, self.name, doing, **where)

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset``."""
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise self._error(exc, offset=offset) from None

    def readinto(self, view: memoryview, offset: int) -> int:
        """Read into ``view`` at ``offset`` (one ``preadv``, no copy); bytes read."""
        try:
            return os.preadv(self._fd, [view], offset)
        except OSError as exc:
            raise self._error(exc, offset=offset) from None

    def current_size(self) -> int:
        """The file's size now (``fstat`` of the open descriptor)."""
        return os.fstat(self._fd).st_size

    def read_many(self, ranges) -> list[bytes]:
        """One ``pread`` per (offset, length) range."""
        return [self.pread(length, offset) for offset, length in ranges]

    def will_need(self, ranges) -> None:
        """Nothing to do: the kernel's read-ahead serves sequential block reads."""

    def close(self) -> None:
        """Close the descriptor (again is harmless)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_source(path) -> Source:
    """The block source for ``path``: a ``RemotePath`` (or URL) reads over its protocol; anything
    else is a local file."""
    from .remote import is_url, location

    if is_url(path):
        return location(path).open_source()
    return LocalSource(path)
