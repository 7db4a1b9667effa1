"""Filesystem steps that make outputs appear whole or not at all.

A new file is written under a hidden temporary name in its destination folder (same
filesystem, so the final rename is atomic), fsynced, then published: hard-linked to its final
name, which fails if that name exists (no clobbering, even against a racing writer), or
replaced when overwriting is asked for.  Temporary names carry the writer's pid so stale ones
left by a killed process can be recognised and cleaned.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path

from .errors import OutputExists

TEMP_PREFIX = "."
TEMP_MARK = ".tmbpart-"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmbpart-(?P<pid>\d+)-[0-9a-f]+$")


def temporary_path(final: Path) -> Path:
    """A unique hidden name beside ``final`` for writing it."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def parse_temporary_name(name: str) -> tuple[str, int] | None:
    """(final name, writer pid) of a temporary file name, or None for any other name."""
    m = _TEMP_RE.match(name)
    return (m.group("name"), int(m.group("pid"))) if m else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running.  A zombie (dead, not yet reaped by its parent; in a
    container, init may reap late or never) answers ``kill(pid, 0)`` but holds no file: not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True          # no /proc (not Linux): the process exists
    return state not in (b"Z", b"X")


def writer_alive(pid: int, last_written: float) -> bool:
    """Whether the process that wrote a file at ``last_written`` (epoch seconds) still runs.

    A pid can be reused: a process that started after the file was last written is not its writer.
    """
    if not pid_alive(pid):
        return False
    try:
        import psutil

        return psutil.Process(pid).create_time() <= last_written + 1.0
    except Exception:   # psutil cannot tell (gone meanwhile, no access): trust the pid
        return pid_alive(pid)


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files in ``folder`` whose writing process no longer exists."""
    found = []
    for entry in os.scandir(folder):
        parsed = parse_temporary_name(entry.name)
        if parsed:
            try:
                written = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if not writer_alive(parsed[1], written):
                found.append(Path(entry.path))
    return found


def publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Give the finished temporary file its final name; never clobber unless ``overwrite``."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputExists("output exists (use --force to replace it)", path=final)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # Filesystems without hard links: check, then rename (a narrow race remains there).
        if final.exists():
            raise OutputExists("output exists (use --force to replace it)", path=final)
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
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def write_atomically(final: Path, data: bytes) -> None:
    """Replace ``final`` with ``data`` so that readers see the old file or the new, never half."""
    tmp = write_staged(final, data)
    try:
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(final.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
