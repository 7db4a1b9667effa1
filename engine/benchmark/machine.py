"""What a benchmark ran on: CPU, cores, memory, the filesystem under test, library versions, load.

Every bench report carries this, because a figure means nothing without the machine that
produced it.  Memory and mounts come from psutil, the CPU model from ``/proc/cpuinfo`` (psutil
has no model name), versions from the packages' own attributes; what cannot be read is
``None`` rather than a guess.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ..host import usable_cores


def cpu_model() -> str | None:
    """The CPU's model name, or None when the system does not say (read from ``/proc/cpuinfo``:
    psutil gives no model name)."""
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
    import psutil

    try:
        return int(psutil.virtual_memory().total)
    except (psutil.Error, OSError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def mount_of(path) -> dict | None:
    """The mount holding ``path`` (psutil's list of every mount, pseudo-filesystems included):
    the last-mounted of the longest mount points that are a prefix of it."""
    import psutil

    real = os.path.realpath(path)
    best = None
    try:
        mounts = psutil.disk_partitions(all=True)
    except (psutil.Error, OSError):
        return None
    for mount in mounts:
        point = mount.mountpoint
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["mountpoint"])):
            best = {
                "device": mount.device,
                "mountpoint": point,
                "fstype": mount.fstype,
                "options": mount.opts,
            }
    return best


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
