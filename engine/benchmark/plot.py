"""bench.png: merge throughput per mode and job count, against the plain copy and network links.

One bar chart a person can read at a glance: for fast, safe and deep merges (and the copyd0om
re-encode), one bar per job count, in MB/s of input, with the spread over rounds as error bars
and the value written on each bar; horizontal lines for the plain copy (the baseline: the inputs
concatenated into a new file on this disk, median of its rounds; merges may run above it, since
they write differently) and for what a 1 Gb/s and a 10 Gb/s link carry (125 and 1250 MB/s).
Every line's legend entry says what it is and its rate.
matplotlib is imported here only, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from . import figures as F
from .report import machine_line

LINKS = (
    (125e6, "1 Gb/s link (125 MB/s)", "tab:purple", ":"),
    (1250e6, "10 Gb/s link (1250 MB/s)", "tab:red", ":"),
)


def plot_report(report: dict, path) -> Path:
    """Draw the report's figures into a PNG at ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = report["figures"]
    jobs_all = report["settings"]["jobs"]
    job_counts = sorted({1, jobs_all})
    groups = [m for m in F.MODES if F.merge_key(m, 1) in figures]
    colours = {1: "tab:blue", jobs_all: "tab:orange"}
    width = 0.8 / len(job_counts)

    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    tallest = 0.0
    for j, n in enumerate(job_counts):
        xs, heights, low, high = [], [], [], []
        for i, mode in enumerate(groups):
            figure = figures.get(F.merge_key(mode, n))
            if figure is None:
                continue
            xs.append(i + (j - (len(job_counts) - 1) / 2) * width)
            heights.append(figure["value"] / 1e6)
            low.append((figure["value"] - figure["min"]) / 1e6)
            high.append((figure["max"] - figure["value"]) / 1e6)
        label = "1 job (merge_files)" if n == 1 else f"{n} jobs (merge_run)"
        ax.bar(
            xs, heights, width * 0.95, yerr=[low, high], capsize=4, color=colours[n], label=label
        )
        _label(ax, xs, heights, high)
        tallest = max([tallest] + [h + e for h, e in zip(heights, high, strict=True)])
    labels = [f"{m}" for m in groups]
    if F.REENCODE in figures:
        figure = figures[F.REENCODE]
        x = len(groups)
        height, high = figure["value"] / 1e6, (figure["max"] - figure["value"]) / 1e6
        ax.bar(
            [x],
            [height],
            width * 0.95,
            color="tab:gray",
            yerr=[[(figure["value"] - figure["min"]) / 1e6], [high]],
            capsize=4,
            label="decode + re-encode, 1 thread (copyd0om)",
        )
        _label(ax, [x], [height], [high])
        labels.append("re-encode\n(copyd0om)")
    ax.set_xticks(range(len(labels)), labels)

    lines = []
    if F.STORAGE_COPY in figures:
        lines.append(
            (
                figures[F.STORAGE_COPY]["value"],
                "baseline: plain copy of the inputs + fsync, median",
                "black",
                "--",
            )
        )
    lines += list(LINKS)
    for rate, label, colour, style in lines:
        ax.axhline(
            rate / 1e6,
            color=colour,
            linestyle=style,
            linewidth=1.5,
            label=f"{label}: {rate / 1e6:,.0f} MB/s" if "link" not in label else label,
        )
    top = max([tallest] + [rate / 1e6 for rate, *_ in lines])
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("throughput (MB/s of input, 1 MB = 1e6 bytes)")
    data = report["data"]
    ax.set_title(
        f"tmbmerge merge throughput: {data['bytes'] / 1e9:.2f} GB run in {data['files']} files, "
        f"median of {report['settings']['rounds']} round(s)\n{machine_line(report)}",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _label(ax, xs, heights, above) -> None:
    """The value of each bar, written just over its error bar."""
    for x, height, extra in zip(xs, heights, above, strict=True):
        ax.annotate(
            f"{height:,.0f}",
            (x, height + extra),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
