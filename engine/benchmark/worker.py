"""Entry point of a measurement's fresh interpreter:
``python -m engine.benchmark.worker TASK_JSON``.

Runs one ``tasks`` task and prints its result, with this process's peak resident memory
(``VmHWM``, see ``isolate``), as one JSON line on stdout.  SIGTERM becomes an
orderly ``Interrupted`` (so a merge removes its temporary output), and a watchdog sends that
SIGTERM to the main thread if the parent dies (``merge.executors.stop_when_parent_dies``), so a
killed bench leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _interrupted(signum, frame):
    from ..errors import Interrupted

    raise Interrupted(f"benchmark worker stopped by {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    """The benchmark worker: run the task given as JSON, print its result and peak memory."""
    signal.signal(signal.SIGTERM, _interrupted)
    from ..host import peak_rss_bytes
    from ..merge.executors import stop_when_parent_dies

    stop_when_parent_dies(os.getppid())
    from .tasks import run_task

    result = run_task(json.loads(argv[0]))
    result["self_peak_rss_bytes"] = peak_rss_bytes()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
