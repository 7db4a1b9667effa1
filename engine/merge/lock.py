"""Exclusive locks on outputs, so two merges never write the same file at once.

A lock is ``flock`` on a hidden ``.<name>.lock`` file beside the output: taken without
waiting (the second merge fails at once with ``OutputLocked``), released by the kernel if the
holder dies (even by SIGKILL), and removed by the holder on release.  The inode check after
locking guards against a lock file removed and recreated by a previous holder meanwhile.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import OutputLocked, output_error


def lock_path(target: Path) -> Path:
    """The lock file beside ``target``."""
    return target.with_name(f".{target.name}.lock")


class ExclusiveLock:
    """An exclusive ``flock`` beside a file: one merge writes an output at a time."""

    def __init__(self, target, *, what: str = "output"):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.what = what
        self._fd = -1

    def acquire(self) -> ExclusiveLock:
        """Take the lock (writing our pid in it), or raise ``OutputLocked`` naming its holder."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only or full folder: no output can be made there
                raise output_error(exc, self.target, "create a lock beside the output") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputLocked(
                    f"another merge (pid {holder}) is writing this {self.what}", path=self.target
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return self
            os.close(fd)  # the file we locked was unlinked by its previous holder: try again

    def release(self) -> None:
        """Remove the lock file and let the lock go."""
        if self._fd >= 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ExclusiveLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
