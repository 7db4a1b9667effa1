"""What this process may use and has used on its machine: cores, peak memory, the clock.

Small facts several layers need (the merge and verify thread counts, the command line's
default ``--jobs``, the generator, the benchmarks' machine description and memory figures,
the journals' timestamps).  They live here once so that they agree: "cores" is always the
affinity mask (what a batch slot or ``taskset`` grants), not the host's count, and "peak
memory" is always ``VmHWM``, which starts afresh at ``exec``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """Peak resident bytes of a process's current program (``VmHWM``, which starts afresh at exec,
    unlike ``ru_maxrss``, which a spawned worker inherits from the parent it was forked from).

    Read from ``/proc/PID/status``: psutil (a dependency, used for the process tree) reports
    no high-water mark on Linux.  None where there is no ``/proc`` or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def iso_now(*, utc: bool = False) -> str:
    """The current time in ISO 8601, to the second: with the local UTC offset, or in UTC
    (``+00:00``) when ``utc``."""
    moment = datetime.now(UTC)
    return (moment if utc else moment.astimezone()).isoformat(timespec="seconds")
