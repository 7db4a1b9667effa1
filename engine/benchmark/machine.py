"""What a benchmark ran on: CPU, cores, memory, the filesystem under test, library versions, load.

Every bench report carries this, because a figure means nothing without the machine that
produced it.  Everything is read from ``/proc`` and the packages' own version attributes; on a
system without ``/proc`` the fields are ``None`` rather than guesses.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ..host import usable_cores


def cpu_model() -> str | None:
    """The CPU's model name, or None when the system does not say."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


#: Cores this process may run on (the affinity mask, not the host's count).
cores = usable_cores


def memory_bytes() -> int | None:
    """The machine's memory in bytes (``MemTotal``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def mount_of(path) -> dict | None:
    """The /proc/mounts entry holding ``path``: the longest mount point that is a prefix of it."""
    real = os.path.realpath(path)
    best = None
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = fields[0], _unescape(fields[1]), fields[2], fields[3]
        inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
        if inside and (best is None or len(mountpoint) >= len(best["mountpoint"])):
            best = {
                "device": device,
                "mountpoint": mountpoint,
                "fstype": fstype,
                "options": options,
            }
    return best


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries the figures depend on."""
    import sys

    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except ImportError:
        versions["numpy"] = None
    try:
        import zstandard

        versions["zstandard"] = zstandard.__version__
        versions["libzstd"] = ".".join(map(str, zstandard.ZSTD_VERSION))
    except ImportError:
        versions["zstandard"] = None
    try:
        import xxhash

        versions["xxhash"] = xxhash.VERSION
        versions["libxxhash"] = xxhash.XXHASH_VERSION
    except ImportError:
        versions["xxhash"] = None
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions["zlib-ng"] = version("zlib-ng")
        from zlib_ng import zlib_ng

        versions["libzlib-ng"] = getattr(zlib_ng, "ZLIBNG_VERSION", None)
    except (ImportError, PackageNotFoundError):
        versions["zlib-ng"] = None
    try:
        import numba

        versions["numba"] = numba.__version__
    except ImportError:
        versions["numba"] = None
    from .. import __version__

    versions["tmbmerge"] = __version__
    return versions


def source_revision() -> str | None:
    """The git commit tmbmerge runs from, with ``-dirty`` when engine/ has uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "engine"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def describe_machine(directory) -> dict:
    """The machine section of a bench report, for the storage under ``directory``."""
    mount = mount_of(directory)
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "directory": os.path.realpath(directory),
        "filesystem": mount["fstype"] if mount else None,
        "mount": mount,
        "load_average_at_start": load_average(),
        "versions": library_versions(),
        "tmbmerge_revision": source_revision(),
    }
