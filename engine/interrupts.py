"""A stop asked for by a signal, remembered until the engine acts on it.

Strategy: the command line turns SIGINT and SIGTERM into an ``Interrupted`` exception raised
wherever the main thread is.  Python cannot deliver that everywhere: raised inside a ``__del__``
(a reader closed by the garbage collector, say) it is printed as "ignored" and lost, and the merge
would go on as if no one had asked it to stop.  So the handler also records the request here
(``request_stop``) and the engine's long loops (each block copied, each output of a merge-run)
call ``raise_if_stopped`` at points where stopping is safe: a lost exception costs one block, never
the stop.
"""

from __future__ import annotations

import signal

from .errors import Interrupted

_requested: list[int] = []


def request_stop(signum: int) -> None:
    """Remember that signal ``signum`` asked this process to stop."""
    _requested.append(signum)


def raise_if_stopped() -> None:
    """Raise ``Interrupted`` if a signal asked to stop (even one whose own exception was lost)."""
    if _requested:
        raise Interrupted(f"interrupted by {signal.Signals(_requested[0]).name}")


def clear() -> None:
    """Forget earlier requests (a new command starts; tests call the CLI many times)."""
    _requested.clear()
