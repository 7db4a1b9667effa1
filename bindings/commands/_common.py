"""Small helpers shared by the command modules: common flags and default job counts."""

from __future__ import annotations

import sys

from engine.host import usable_cores

from ..flags import cli_wording


def print_error(line) -> None:
    """``tmbmerge: error: <line>`` on stderr, flushed: how every command reports a failure (the
    library's ``force=True`` worded as the flag, ``--force``: ``bindings.flags``)."""
    print(f"tmbmerge: error: {cli_wording(line)}", file=sys.stderr, flush=True)


def add_verbosity(parser, quiet: str | None = "print only errors") -> None:
    """``-v``/``--verbose`` (repeatable) and ``-q``/``--quiet``: how much the command says.

    ``quiet`` is what ``-q`` silences besides log messages below errors (None: no ``-q``, the
    command has nothing else to silence and ``-q`` only lowers the log level)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what the engine does as it goes (-v: each step, -vv: details), on stderr",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help=f"{quiet}; log only errors" if quiet else "log only errors",
    )


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON report")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def default_output_jobs() -> int:
    """Outputs merge-run makes at once: one merge already keeps two cores busy (a reading and a
    writing thread; deep mode's decoders), so half the cores, at least one (measured: on 2 cores
    two outputs at once ran at 0.5-0.8x the speed of one after the other)."""
    return max(1, usable_cores() // 2)
