"""Filesystem steps that make outputs appear whole or not at all.

A new file is written under a hidden temporary name in its destination folder (same
filesystem, so the final rename is atomic), fsynced, then published: hard-linked to its final
name, which fails if that name exists (no clobbering, even against a racing writer), or
replaced when overwriting is asked for.  Temporary names carry the writer's pid so stale ones
left by a killed process can be recognised and cleaned.  ``Writeback`` starts the disk write
of a file's older bytes while it is still being written, so the final fsync has little left
to wait for.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys
from pathlib import Path

from .errors import OutputExists, output_error

TEMP_PREFIX = "."
TEMP_MARK = ".tmbpart-"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmbpart-(?P<pid>\d+)-[0-9a-f]+$")


def temporary_path(final: Path) -> Path:
    """A unique hidden name beside ``final`` for writing it."""
    return final.with_name(
        f"{TEMP_PREFIX}{final.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
    )


def parse_temporary_name(name: str) -> tuple[str, int] | None:
    """(final name, writer pid) of a temporary file name, or None for any other name."""
    m = _TEMP_RE.match(name)
    return (m.group("name"), int(m.group("pid"))) if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running.  A zombie (dead, not yet reaped by its parent; in a
    container, init may reap late or never) answers ``kill(pid, 0)`` but holds no file: not
    alive."""
    import psutil  # only when a temporary file of another process is met: off a merge's start-up

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # no access to its state: it exists
        return True


def writer_alive(pid: int, last_written: float) -> bool:
    """Whether the process that wrote a file at ``last_written`` (epoch seconds) still runs.

    A pid can be reused: a process that started after the file was last written is not its writer.
    """
    if not pid_alive(pid):
        return False
    try:
        import psutil

        return psutil.Process(pid).create_time() <= last_written + 1.0
    except Exception:  # psutil cannot tell (gone meanwhile, no access): trust the pid
        return pid_alive(pid)


def stale_temporaries(folder: Path, names=None) -> list[Path]:
    """Temporary files in ``folder`` (of the final ``names`` only, if given) whose writing process
    no longer exists."""
    found = []
    for entry in os.scandir(folder):
        parsed = parse_temporary_name(entry.name)
        if parsed and (names is None or parsed[0] in names):
            try:
                written = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if not writer_alive(parsed[1], written):
                found.append(Path(entry.path))
    return found


def remove_stale_temporaries(folder: Path, names=None) -> list[Path]:
    """Remove what ``stale_temporaries`` finds; returns what was removed."""
    found = stale_temporaries(folder, names)
    for path in found:
        remove_quietly(path)
    return found


def same_file(a: Path, b: Path) -> bool:
    """Whether two names are one file: the same resolved path, or (both existing) the same
    (st_dev, st_ino), which a hard link shares."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        first, second = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Give the finished temporary file its final name; never clobber unless ``overwrite``."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExists("output exists (use force=True to replace it)", path=final) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # Filesystems without hard links: check, then rename (a narrow race remains there).
        if final.exists():
            raise OutputExists("output exists (use force=True to replace it)", path=final) from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def write_staged(final: Path, data: bytes) -> Path:
    """Write ``data`` under a temporary name beside ``final``, fsynced; the caller publishes it."""
    tmp = temporary_path(final)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view.nbytes:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        remove_quietly(tmp)
        if isinstance(exc, OSError):  # full, read-only, no permission: named after the destination
            raise output_error(exc, final) from None
        raise
    return tmp


def write_atomically(final: Path, data: bytes) -> None:
    """Replace ``final`` with ``data`` so that readers see the old file or the new, never half."""
    tmp = write_staged(final, data)
    try:
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as exc:
        remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise output_error(exc, final) from None
        raise


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where there is none.

    Looked up among the symbols the process has loaded already (libc is one of them), not with
    ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a child process: 5-10 ms and a fork
    on every command's start-up."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; do not wait


class Writeback:
    """Start writing a growing file's bytes to disk a window behind the writer, and optionally
    drop them from the page cache once they are on their way and nobody here needs them.

    Without it the kernel holds back writeback until dirty memory passes its background ratio
    (gigabytes on a large machine), so a merged file's whole content waits for the final fsync:
    about a second per 2 GB on the reference VM, with every core idle.  Asking for writeback of
    everything older than ``window`` bytes, ``step`` bytes at a time, overlaps the disk write
    with the merge; the fsync then only waits for the last window.

    With ``drop_behind``, bytes handed to writeback at least a step earlier, and before
    ``needed_from()`` (the offset a reader of this process, such as the merge's read-back, has
    yet to reach), are dropped from the page cache (``POSIX_FADV_DONTNEED``), and the whole
    file once ``finished()``.  A merge streaming gigabytes out then holds a few steps of page
    cache instead of the whole output: it does not push out of memory the inputs that are
    still to be merged, and the pages it frees are the ones its next writes reuse (on the
    reference VM, writing and fsyncing 2 GiB cost 0.55-0.8 CPU-s of system time this way,
    against 1.8-2.0 with writeback alone and 3.5-3.7 with neither, into pages the hypervisor
    had taken back after the last file was deleted).  Pages still being written when dropped are
    skipped by the kernel and go at ``finished()``.

    All of it is advice: it does not wait for the write to complete (``sync_file_range`` may
    block briefly while the device's queue is full, which only paces the writer to the disk)
    and never fails the write (durability still comes from the fsync); a refused call turns it
    off for the file.
    """

    window = 32 << 20  # the newest bytes, left alone
    step = 32 << 20  # at least this much is handed over (or dropped) at a time: few, large requests

    def __init__(self, fd: int, *, drop_behind: bool = False):
        self.fd = fd
        self.enabled = _SYNC_FILE_RANGE is not None
        self.drop_behind = drop_behind and self.enabled
        self.needed_from = (
            None  # callable: the lowest offset still to be read through the cache here
        )
        self.started = 0  # bytes [0, started) have been handed to writeback
        self.dropped = 0  # bytes [0, dropped) have been dropped from the page cache
        self._previous = (
            0  # ``started`` one request ago: those bytes have had a step to reach the disk
        )

    def written(self, size: int) -> None:
        """The file now holds ``size`` bytes."""
        end = size - self.window
        if not self.enabled or end - self.started < self.step:
            return
        if _SYNC_FILE_RANGE(self.fd, self.started, end - self.started, _SYNC_FILE_RANGE_WRITE) != 0:
            self.enabled = self.drop_behind = (
                False  # e.g. a filesystem that refuses it: the fsync does it all
            )
            return
        self._previous, self.started = self.started, end
        if self.drop_behind:
            limit = (
                self._previous
                if self.needed_from is None
                else min(self._previous, self.needed_from())
            )
            if limit - self.dropped >= self.step:
                self._drop(self.dropped, limit)

    def finished(self, size: int) -> None:
        """The file is complete and fsynced: drop all of it (with ``drop_behind``)."""
        if self.drop_behind:
            self._drop(0, size)

    def _drop(self, start: int, end: int) -> None:
        try:
            os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            self.drop_behind = False
            return
        self.dropped = max(self.dropped, end)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries durable (after a rename or a new file in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Remove ``path``; a missing one is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
