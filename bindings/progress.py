"""The live progress display people see while merging: bytes, files, MB/s and ETA, on one line.

Implements the engine's progress interface (``engine.progress``) with ``rich``, drawn on
stderr, and only when stderr is a terminal and ``--quiet`` was not given; otherwise the engine
gets a ``NullProgress`` and nothing is drawn (logs and pipes stay clean).  ``rich`` is imported
only when a display is actually shown.

The line fits an 80-column terminal: the label is cut to ``LABEL_WIDTH`` and the bar takes
what the other columns leave (events are left to the summary line).  The engine advances the
bytes of every input, header and index included, so a finished merge shows 100%.
"""

from __future__ import annotations

import sys
import threading

from engine.progress import NullProgress


def make_progress(quiet: bool = False):
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()


LABEL_WIDTH = 20


class RichProgress(NullProgress):
    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        label = Column(max_width=LABEL_WIDTH, no_wrap=True, overflow="ellipsis")
        self._progress = Progress(
            TextColumn("[bold]{task.description}", table_column=label),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeRemainingColumn(compact=True),
            console=console or Console(stderr=True),
            transient=False,
            expand=True,
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
                self._task = self._progress.add_task(
                    label, total=bytes or None, files=f"0/{files}", events=0
                )

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        with self._lock:
            if self._task is None:
                return
            self._files += files
            self._events += events
            self._progress.update(
                self._task,
                advance=bytes,
                files=f"{self._files}/{self._totals[0]}",
                events=self._events,
            )

    def finish(self, *, label: str = "") -> None:
        with self._lock:
            if self._task is not None:
                self._progress.stop()
                self._task = None
