"""The live progress display people see while merging: files, events, MB/s and ETA.

Implements the engine's progress interface (``engine.progress``) with ``rich``, drawn on
stderr, and only when stderr is a terminal and ``--quiet`` was not given; otherwise the engine
gets a ``NullProgress`` and nothing is drawn (logs and pipes stay clean).  ``rich`` is imported
only when a display is actually shown.
"""

from __future__ import annotations

import sys
import threading

from engine.progress import NullProgress


def make_progress(quiet: bool = False):
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()


class RichProgress(NullProgress):
    def __init__(self):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files, {task.fields[events]:,} events"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._task = None
        self._lock = threading.Lock()
        self._files = 0
        self._events = 0
        self._totals = (0, 0)

    def start(self, *, label: str, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        with self._lock:
            if self._task is None:
                self._progress.start()
                self._totals = (files, events)
                self._task = self._progress.add_task(label, total=bytes or None, files=f"0/{files}", events=0)

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        with self._lock:
            if self._task is None:
                return
            self._files += files
            self._events += events
            self._progress.update(self._task, advance=bytes, files=f"{self._files}/{self._totals[0]}",
                                  events=self._events)

    def finish(self, *, label: str = "") -> None:
        with self._lock:
            if self._task is not None:
                self._progress.stop()
                self._task = None
