"""The ``tmbmerge`` command line: argument parsing, error reporting and exit codes.

Strategy: every subcommand lives in its own module under ``bindings.commands`` and registers
its parser here.  This module owns only what is common to all of them: the top-level parser,
turning an ``EngineError`` into one line on stderr and its documented exit code, and turning
SIGINT/SIGTERM into an orderly ``Interrupted`` so that cleanup (temporary outputs, locks) runs.
Tracebacks are for bugs only, and only with ``TMBMERGE_DEBUG=1``.

Logging: the engine and the bindings log through ``logging`` (loggers ``engine.*`` and
``bindings.*``) and never configure it; the command shows their messages on stderr, warnings
and errors by default, what each step does with ``-v``, details with ``-vv``, errors only with
``-q``.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS starts a thread per core when numpy is imported, ~0.08 CPU-s of every
# command's start-up on the reference VM; nothing here does linear algebra.  Set before numpy is
# imported (by any command), inherited by worker processes; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from engine import __version__
from engine.errors import EXIT_INTERNAL, EngineError, Interrupted, world_error  # noqa: E402
from engine.interrupts import clear as clear_stop_requests  # noqa: E402
from engine.interrupts import request_stop  # noqa: E402

from .commands import COMMAND_MODULES  # noqa: E402
from .commands._common import CATALOG_DEADLINE_ENV, print_error  # noqa: E402
from .flags import cli_wording, flag  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmbmerge",
        description="Merge per-run TMB event files fast, with every input validated and every "
        "output verified.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 usage, 3 input unreadable, 4 format, 5 "
        "integrity, 6 consistency, 7 output exists/locked, 8 catalogue, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"tmbmerge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def error_line(exc: EngineError) -> str:
    """The line reporting ``exc``: the library names its parameters, the command line adds the
    flags that set them ("threads must be at least 1 (option --jobs)")."""
    parameters = getattr(exc, "parameters", ())
    if not parameters:
        return str(exc)
    flags = [flag(name) for name in parameters]
    return f"{exc} ({'option' if len(flags) == 1 else 'options'} {', '.join(flags)})"


def _raise_interrupted(signum, frame):
    request_stop(signum)  # remembered: raised inside a __del__, the exception below would be lost
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def _unraisable(hook):
    """``sys.unraisablehook`` that stays silent about an interruption raised where Python cannot
    deliver it (a ``__del__``): the request is remembered and acted on at the next block."""

    def unraisable(info):
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    return unraisable


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    clear_stop_requests()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupted)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    logs = _show_logs(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    environ_before = _apply_catalog_deadline(getattr(args, "catalog_deadline", None))
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print_error(error_line(exc))
        _json_error(args, exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print_error(interrupted_message(exc))
        if getattr(args, "json", False):
            _print_json(
                {
                    "error": "Interrupted",
                    "message": interrupted_message(exc),
                    "text": interrupted_message(exc),
                    "exit_code": Interrupted.exit_code,
                    "published": getattr(exc, "published", []),
                    "not_published": getattr(exc, "not_published", []),
                }
            )
        return Interrupted.exit_code
    except BrokenPipeError:
        # The reader of our output went away (e.g. `tmbmerge dump ... | head`).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: one line, unless asked for the traceback
        if os.environ.get("TMBMERGE_DEBUG"):
            raise
        error = world_error(exc)  # a disk, a permission or a path, not a bug
        if error is not None:
            print_error(str(error))
            _json_error(args, error)
            return error.exit_code
        print_error(
            f"internal error: {type(exc).__name__}: {exc} (set TMBMERGE_DEBUG=1 for a traceback)"
        )
        return EXIT_INTERNAL
    finally:
        # As the process's own command line (argv None), the work is done: a SIGTERM from now on
        # (a scheduler stopping jobs as they end) must not turn a finished command into a kill
        # (-15); the exit code stands.  Called from Python, restore the caller's handler.
        signal.signal(signal.SIGTERM, signal.SIG_IGN if argv is None else previous)
        signal.signal(signal.SIGINT, signal.SIG_IGN if argv is None else previous_int)
        sys.unraisablehook = previous_hook
        logs.close()
        if environ_before is not None:  # called from Python: leave the caller's environment
            _restore(CATALOG_DEADLINE_ENV, environ_before[0])


def _apply_catalog_deadline(seconds: float | None) -> tuple[str | None] | None:
    """``--catalog-deadline``: set through the environment, which every catalogue the command
    opens reads, in this process and in the worker processes it starts; returns the value it
    replaced (in a tuple), or None when the option was not given."""
    if seconds is None:
        return None
    before = os.environ.get(CATALOG_DEADLINE_ENV)
    os.environ[CATALOG_DEADLINE_ENV] = repr(seconds)
    return (before,)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _json_error(args, exc: EngineError) -> None:
    """With ``--json``, a command that fails before it has a report prints the error as its JSON
    (``EngineError.to_dict``: ``error``, ``message``, ``text``, ``exit_code``, ``path``...)."""
    if getattr(args, "json", False):
        _print_json(exc.to_dict())


def _print_json(value) -> None:
    import json

    print(json.dumps(value, indent=2), flush=True)


LOGGERS = ("engine", "bindings")


class _LogDisplay:
    """Shows the library's log records on stderr, for the duration of one command."""

    def __init__(self, level: int, detailed: bool):
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(_Formatter(detailed))
        self.previous = []
        for name in LOGGERS:
            logger = logging.getLogger(name)
            self.previous.append((logger, logger.level, logger.propagate))
            logger.setLevel(level)
            logger.addHandler(self.handler)
            logger.propagate = False

    def close(self) -> None:
        for logger, level, propagate in self.previous:
            logger.removeHandler(self.handler)
            logger.setLevel(level)
            logger.propagate = propagate


class _Formatter(logging.Formatter):
    """``tmbmerge: warning: ...`` like the command's error lines; -vv adds the time and the
    logger."""

    def __init__(self, detailed: bool):
        super().__init__("%(asctime)s %(name)s: %(message)s" if detailed else "%(message)s")
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        return f"tmbmerge: {record.levelname.lower()}: {cli_wording(super().format(record))}"


def _show_logs(verbose: int, quiet: bool) -> _LogDisplay:
    if quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    return _LogDisplay(level, detailed=verbose >= 2)


def interrupted_message(exc: BaseException) -> str:
    """What an interruption left: the outputs published before it (``exc.published``, set by the
    merge commands) and those not published, or that nothing was."""
    published = getattr(exc, "published", None) or []
    missing = getattr(exc, "not_published", None) or []
    if not published:
        line = "interrupted; nothing was left at the destination"
        return line + (f" (not published: {', '.join(missing)})" if missing else "")
    line = f"interrupted; published and verified before it: {', '.join(published)}"
    if missing:
        line += f"; not published: {', '.join(missing)} (rerun the command to finish them)"
    return line


if __name__ == "__main__":
    sys.exit(main())
