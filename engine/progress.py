"""Progress reporting from the engine to whoever displays it.

The engine calls ``start`` with totals, ``advance`` as bytes, events and files go by, and
``finish``; it never draws anything.  ``NullProgress`` ignores it all.  The command line plugs
in a live display of its own; a merge running in a worker process forwards these
calls through a queue (``QueueProgress``) to the parent's display.
"""

from __future__ import annotations


class NullProgress:
    """Progress that goes nowhere: the library's default."""

    def start(self, *, label: str, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        """Nothing."""
        pass

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        """Nothing."""
        pass

    def finish(self, *, label: str = "") -> None:
        """Nothing."""
        pass


class QueueProgress(NullProgress):
    """Forwards progress calls as tuples on a multiprocessing queue (worker side)."""

    def __init__(self, queue, task: str):
        self.queue = queue
        self.task = task
        self._bytes = 0

    def start(self, *, label: str, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        """Tell the parent a task started."""
        self.queue.put(("start", self.task, label, files, events, bytes))

    def advance(self, *, files: int = 0, events: int = 0, bytes: int = 0) -> None:
        # Batch small byte advances so the queue carries a few messages per second, not per block.
        """Tell the parent what was done (bytes batched, 64 MiB a message)."""
        self._bytes += bytes
        if files or events or self._bytes >= 64 << 20:
            self.queue.put(("advance", self.task, files, events, self._bytes))
            self._bytes = 0

    def finish(self, *, label: str = "") -> None:
        """Tell the parent the task finished."""
        if self._bytes:
            self.queue.put(("advance", self.task, 0, 0, self._bytes))
            self._bytes = 0
        self.queue.put(("finish", self.task, label))
