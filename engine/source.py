"""Block sources: the one way readers get a file's bytes, local or remote.

A reader asks its source for ``pread(length, offset)``, ``readinto(view, offset)`` (a block into
a leased buffer) and ``read_many(ranges)`` (several small ranges at once, for opening),
``current_size()`` (to notice a file that changed while it was read), and
announces the ranges it is about to read with ``will_need``.  ``LocalSource`` is the local
file: ``pread``/``preadv`` on one descriptor, exactly the calls readers made before there
were sources, and ``will_need`` costs nothing (the kernel reads ahead).  Remote files
(``engine.remote``) get a source that keeps several range reads in flight ahead of the reader.
Either way the reader checks every block the same way: the source only moves bytes.
"""

from __future__ import annotations

import os

from .errors import input_error


class LocalSource:
    remote = False

    def __init__(self, path):
        from .readers import check_regular_file

        self.path = path
        self._fd = -1
        check_regular_file(path)  # a FIFO would block the open below
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise input_error(exc, path, "open") from None
        st = os.fstat(self._fd)
        self.size = st.st_size
        self.identity = (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
        )  # to recognise it when reopened

    def pread(self, length: int, offset: int) -> bytes:
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise input_error(exc, self.path, offset=offset) from None

    def readinto(self, view: memoryview, offset: int) -> int:
        try:
            return os.preadv(self._fd, [view], offset)
        except OSError as exc:
            raise input_error(exc, self.path, offset=offset) from None

    def current_size(self) -> int:
        return os.fstat(self._fd).st_size

    def read_many(self, ranges) -> list[bytes]:
        return [self.pread(length, offset) for offset, length in ranges]

    def will_need(self, ranges) -> None:
        """Nothing to do: the kernel's read-ahead serves sequential block reads."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_source(path):
    """The block source for ``path``: a ``RemotePath`` (or URL) reads over its protocol; anything
    else is a local file."""
    from .remote import is_url, location

    if is_url(path):
        return location(path).open_source()
    return LocalSource(path)
