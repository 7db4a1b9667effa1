"""Showing a campaign sizing: a table for the terminal and a markdown report, every number sourced.

Renders ``sizing.Sizing``; each row is one line of the arithmetic with its value in the unit a
person expects (MB/s and Gb/s for rates, TB for volumes, GiB for memory, % for shares) and the
option or bench.json key it came from.
"""

from __future__ import annotations

from ..units import human_bytes
from .report import machine_line
from .sizing import Sizing

_MEMORY_KEYS = ("memory_per_server",)


def format_value(key: str, value: float, unit: str, *, bits: bool = True) -> str:
    """``value`` in ``unit`` as a reader wants it (MB/s and Gb/s, GiB, counts)."""
    if unit == "B/s":
        return (
            f"{value / 1e6:,.1f} MB/s ({value * 8 / 1e9:,.2f} Gb/s)"
            if bits
            else f"{value / 1e6:,.1f} MB/s"
        )
    if unit == "B":
        return f"{value / 2**30:,.1f} GiB" if key in _MEMORY_KEYS else human_bytes(value)
    if unit == "ratio":
        return (
            f"{value:.3f}" if key in ("output_ratio", "capacity_margin") else f"{100 * value:.1f}%"
        )
    return f"{value:g}"  # servers, cores


TABLE_WIDTH = 100


def format_range(key: str, low: float, high: float, unit: str) -> str:
    """A line's value on the slowest and on the fastest rounds: '350.0-910.2 MB/s', '2-5',
    '41.2%-88.0%'."""
    if format_value(key, low, unit) == format_value(key, high, unit):
        return "-"  # the same on every round (an option, or arithmetic on options only)
    if unit == "B/s":
        return f"{low / 1e6:,.1f}-{high / 1e6:,.1f} MB/s"
    return f"{format_value(key, low, unit)}-{format_value(key, high, unit)}"


def spread_note(sizing: Sizing) -> str:
    """What the sizing's range means, or why it has none."""
    if sizing.spread:
        return (
            f"range: the same sizing with every measured rate at its slowest and at its fastest of "
            f"{sizing.rounds} bench rounds"
        )
    return (
        "no range: the bench measured one round; run `tmbmerge bench` (3 rounds) and pass --bench "
        "for the spread"
    )


def render_table(sizing: Sizing) -> str:
    """The sizing as a text table at most ``TABLE_WIDTH`` columns wide (long cells wrap)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, width=TABLE_WIDTH)
    table.add_column("quantity", ratio=4)
    table.add_column("value", justify="right", ratio=2)
    if sizing.spread:
        table.add_column("slowest-fastest", justify="right", ratio=3)
    table.add_column("from", ratio=4, overflow="fold")
    for line in sizing.lines:
        cells = [line.label, format_value(line.key, line.value, line.unit, bits=False)]
        if sizing.spread:
            cells.append(format_range(line.key, *sizing.spread[line.key], line.unit))
        table.add_row(*cells, line.source)
    drawn = io.StringIO()
    console = Console(file=drawn, width=TABLE_WIDTH, color_system=None, highlight=False)
    console.print(table)
    console.print(spread_note(sizing))
    text = drawn.getvalue()
    return "\n".join(row.rstrip() for row in text.splitlines()) + "\n"


def render_markdown(sizing: Sizing, report: dict, *, bench_source: str) -> str:
    """The sizing as Markdown."""
    c = sizing.campaign
    lines = [
        "# Merge hardware for a campaign",
        "",
        (
            f"- Campaign: {human_bytes(c.volume_bytes)} in {c.days:g} days, {c.mode} mode; link "
            f"{c.link_rate * 8 / 1e9:g} Gb/s per direction; unmerged files wait up to "
            f"{c.wait_hours:g} h; servers planned at <= {100 * c.max_utilisation:.0f}% "
            f"utilisation; {c.os_memory_bytes / 2**30:g} GiB per server for the OS."
        ),
        (
            f"- Measurements: {bench_source} ({report['created']}, `{report['command']}`), on "
            f"{machine_line(report)}; servers are assumed to be like that machine."
        ),
        (
            f"- **{int(sizing['servers'])} merge server(s)**, each with "
            f"{int(sizing['cores_per_server'])} cores, "
            f"{format_value('memory_per_server', sizing['memory_per_server'], 'B')} of memory, "
            f"{format_value('disk_total_per_server', sizing['disk_total_per_server'], 'B/s')} of "
            "disk bandwidth and "
            f"{format_value('buffer_per_server', sizing['buffer_per_server'], 'B')} of buffer "
            f"space; the bottleneck is **{sizing.bottleneck}**; each server runs at "
            f"{100 * sizing['utilisation']:.1f}% (capacity {sizing['capacity_margin']:.2f}x the "
            "need)."
        ),
        "",
        f"- {spread_note(sizing).capitalize()}.",
        "",
        "| Quantity | Value | Range | From |" if sizing.spread else "| Quantity | Value | From |",
        "| --- | ---: | ---: | --- |" if sizing.spread else "| --- | ---: | --- |",
    ]
    for line in sizing.lines:
        cells = [line.label, format_value(line.key, line.value, line.unit)]
        if sizing.spread:
            cells.append(format_range(line.key, *sizing.spread[line.key], line.unit))
        lines.append(f"| {' | '.join(cells)} | {line.source} |")
    lines += [
        "",
        (
            "Model: inputs arrive over the link and land on the server's buffer disk; merged "
            "outputs are written to that disk and leave over the link (full duplex). Safe and "
            "deep modes read every output back from the page cache as they write it. See "
            "engine/benchmark/sizing.py for the arithmetic."
        ),
    ]
    return "\n".join(lines) + "\n"
