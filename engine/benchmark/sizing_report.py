"""Showing a campaign sizing: a table for the terminal and a markdown report, every number sourced.

Renders ``sizing.Sizing``; each row is one line of the arithmetic with its value in the unit a
person expects (MB/s and Gb/s for rates, TB for volumes, GiB for memory, % for shares) and the
option or bench.json key it came from.
"""

from __future__ import annotations

from .report import machine_line
from .sizing import Sizing
from ..units import human_bytes

_MEMORY_KEYS = ("memory_per_server",)


def format_value(key: str, value: float, unit: str) -> str:
    if unit == "B/s":
        return f"{value / 1e6:,.1f} MB/s ({value * 8 / 1e9:,.2f} Gb/s)"
    if unit == "B":
        return f"{value / 2**30:,.1f} GiB" if key in _MEMORY_KEYS else human_bytes(value)
    if unit == "ratio":
        return f"{value:.3f}" if key in ("output_ratio", "capacity_margin") else f"{100 * value:.1f}%"
    return f"{value:g}"     # servers, cores


def render_table(sizing: Sizing) -> str:
    rows = [(line.label, format_value(line.key, line.value, line.unit), line.source) for line in sizing.lines]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    out = [f"{'quantity':<{widths[0]}}  {'value':>{widths[1]}}  from"]
    out += [f"{label:<{widths[0]}}  {value:>{widths[1]}}  {source}" for label, value, source in rows]
    return "\n".join(out) + "\n"


def render_markdown(sizing: Sizing, report: dict, *, bench_source: str) -> str:
    c = sizing.campaign
    lines = [
        "# Merge hardware for a campaign",
        "",
        (f"- Campaign: {human_bytes(c.volume_bytes)} in {c.days:g} days, {c.mode} mode; link {c.link_rate * 8 / 1e9:g} "
        f"Gb/s per direction; unmerged files wait up to {c.wait_hours:g} h; servers planned at <= "
        f"{100 * c.max_utilisation:.0f}% utilisation; {c.os_memory_bytes / 2**30:g} GiB per server for the OS."),
        (f"- Measurements: {bench_source} ({report['created']}, `{report['command']}`), on {machine_line(report)}; "
        "servers are assumed to be like that machine."),
        (f"- **{int(sizing['servers'])} merge server(s)**, each with {int(sizing['cores_per_server'])} cores, "
        f"{format_value('memory_per_server', sizing['memory_per_server'], 'B')} of memory, "
        f"{format_value('disk_total_per_server', sizing['disk_total_per_server'], 'B/s')} of disk bandwidth and "
        f"{format_value('buffer_per_server', sizing['buffer_per_server'], 'B')} of buffer space; the bottleneck is "
        f"**{sizing.bottleneck}**; each server runs at {100 * sizing['utilisation']:.1f}% "
        f"(capacity {sizing['capacity_margin']:.2f}x the need)."),
        "",
        "| Quantity | Value | From |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| {line.label} | {format_value(line.key, line.value, line.unit)} | {line.source} |"
              for line in sizing.lines]
    lines += ["", ("Model: inputs arrive over the link and land on the server's buffer disk; merged outputs are "
              "written to that disk and leave over the link (full duplex). Safe and deep modes read every output "
              "back from the page cache as they write it. See engine/benchmark/sizing.py for the arithmetic.")]
    return "\n".join(lines) + "\n"
