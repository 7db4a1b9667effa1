"""Writing and reading a bench report: bench.json for machines, bench.md for people.

bench.json is the report dictionary of ``runner.run_bench`` as is: every figure with its unit,
what it was measured on, its per-round samples, its baseline and ratio; the targets; peak
memory; the machine.  bench.md renders the same facts as tables (figure, value, baseline,
ratio), so a person never needs the JSON.  ``load_report`` reads a bench.json back and refuses
files that are not one.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputNotFound, MetadataError
from ..units import human_bytes, mb_per_s, mib

REPORT_FORMAT = "tmbmerge-bench/1"


def write_report(report: dict, out_dir, *, plot: bool = True) -> dict[str, Path]:
    """Write bench.json, bench.md and (with ``plot``) bench.png into ``out_dir``; return their
    paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "md": out_dir / "bench.md"}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    paths["md"].write_text(render_markdown(report))
    if plot:
        from .plot import plot_report

        paths["png"] = plot_report(report, out_dir / "bench.png")
    return paths


def load_report(path) -> dict:
    """A ``bench.json`` report, checked to be one (else ``InputNotFound``, ``MetadataError``)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputNotFound("no such bench report", path=path) from None
    except (OSError, ValueError) as exc:
        raise MetadataError(f"cannot read the bench report: {exc}", path=path) from exc
    if (
        not isinstance(report, dict)
        or report.get("format") != REPORT_FORMAT
        or "figures" not in report
    ):
        raise MetadataError(
            f"not a tmbmerge bench report (format {REPORT_FORMAT} expected)", path=path
        )
    return report


def _value(figure: dict) -> str:
    return (
        mb_per_s(figure["value"])
        if figure["unit"] == "B/s"
        else f"{figure['value']:g} {figure['unit']}"
    )


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def machine_line(report: dict) -> str:
    """The machine a report was measured on, in one line."""
    m = report["machine"]
    memory = f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "? GiB"
    return (
        f"{m.get('cpu_model') or 'unknown CPU'}, {m['cores']} cores, {memory}, "
        f"{m.get('filesystem') or '?'} at {m.get('directory')}"
    )


def render_markdown(report: dict) -> str:
    """The report as Markdown (``bench.md``)."""
    figures = report["figures"]
    data = report["data"]
    m = report["machine"]
    lines = [
        "# tmbmerge bench",
        "",
        f"- When: {report['created']} ({report.get('elapsed_seconds', '?')} s)",
        f"- Command: `{report['command']}`",
        (
            f"- Machine: {machine_line(report)}; load average {m.get('load_average_at_start')} "
            f"at start, {m.get('load_average_at_end')} at end"
        ),
        (
            f"- Data: run {data['run']}, {data['files']} files, {human_bytes(data['bytes'])}, "
            f"{data['events']:,} events ({data['generator']})"
        ),
        (
            f"- Each figure is the median of {report['settings']['rounds']} round(s), every "
            "measurement in a fresh process, rounds in alternating order. Rates are input bytes "
            "per second (MB = 1e6 bytes)."
        ),
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + (f" (source {m['tmbmerge_revision']})" if m.get("tmbmerge_revision") else ""),
        "",
        "## Figures",
        "",
        "| Figure | Value | Baseline | Ratio | Spread | Measured on |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for key, figure in figures.items():
        base = figure.get("baseline")
        base_text = f"{base} ({_value(figures[base])})" if base in figures else "—"
        spread = (
            f"{figure['min'] / 1e6:,.0f}–{figure['max'] / 1e6:,.0f}"
            if figure["rounds"] > 1
            else "1 round"
        )
        lines.append(
            f"| `{key}` | {_value(figure)} | {base_text} | {_ratio(figure.get('ratio'))} | "
            f"{spread} | {figure['on']} |"
        )
    read = figures.get("storage.read")
    if read:
        lines += [
            "",
            (
                f"The read of `storage.read` was **{read['cache_state']}** (evicted with "
                f"{read['eviction']}; at most "
                f"{100 * (read['resident_fraction_before'] or 0):.0f}% of its pages were cached "
                "when the read began). Merges and the copy read their inputs from the page cache "
                f"(at least {100 * _min_resident(figures):.0f}% resident), as a merge of freshly "
                "transferred files does."
            ),
        ]
    lines += [
        "",
        "## Targets (issue 3)",
        "",
        "Measured: ratio of the medians (the verdict); best rounds: ratio of each side's best "
        "round.",
        "",
        "| Ratio | Figure / baseline | Measured | Best rounds | Target | Met |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for name, ratio in report["ratios"].items():
        met = {True: "yes", False: "**NO**", None: "—"}[ratio["met"]]
        lines.append(
            f"| {name} | `{ratio['figure']}` / `{ratio['baseline']}` | {_ratio(ratio['value'])} | "
            f"{_ratio(ratio.get('best'))} | {ratio['target'] or '—'} | {met} |"
        )
    lines += [
        "",
        "## Peak memory",
        "",
        "| Measurement | Peak RSS of one process | Peak RSS of the process tree | Limit | Met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for key, mem in report["memory"].items():
        tree = mib(mem["tree_peak_rss_bytes"]) if mem.get("tree_peak_rss_bytes") else "—"
        limit = f"< {mem['limit_bytes'] / 1e6:.0f} MB" if mem.get("limit_bytes") else "—"
        met = {True: "yes", False: "**NO**", None: "—"}[mem["met"]]
        lines.append(f"| `{key}` | {mib(mem['peak_rss_bytes'])} | {tree} | {limit} | {met} |")
    return "\n".join(lines) + "\n"


def _min_resident(figures: dict) -> float:
    values = [f["input_resident"] for f in figures.values() if f.get("input_resident") is not None]
    return min(values) if values else 0.0
