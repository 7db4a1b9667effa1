"""The text tables of the commands that list things (``status``, ``plan``, ``catalog show``,
``serve dataset list``).

Drawn by ``rich`` (already the progress display's library): columns sized to their contents,
long cells wrapped inside their column, the whole at most ``MAX_WIDTH`` columns (a narrower
terminal's width, when printing to one).  The table is rendered as plain text, without colours,
and each line is printed without trailing blanks, so the output reads the same in a terminal,
a log file or a pipe to ``grep``.  ``rich`` is imported only when a table is printed.
"""

from __future__ import annotations

import io
import shutil
import sys

MAX_WIDTH = 100


def table(*columns: str, header: bool = True, numeric: tuple[str, ...] = ()):
    """A borderless table with these column headings (``numeric`` ones right-aligned)."""
    from rich.table import Table

    shown = Table(box=None, show_header=header, pad_edge=False)
    for name in columns:
        shown.add_column(name, justify="right" if name in numeric else "left", overflow="fold")
    return shown


def print_table(shown) -> None:
    """Print ``shown`` as plain text, at most ``MAX_WIDTH`` columns wide."""
    from rich.console import Console

    width = MAX_WIDTH
    if sys.stdout.isatty():  # a pipe or a log file gets the full width, whatever the terminal
        width = min(width, shutil.get_terminal_size((MAX_WIDTH, 24)).columns)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False).print(shown)
    for line in buffer.getvalue().splitlines():
        print(line.rstrip())
