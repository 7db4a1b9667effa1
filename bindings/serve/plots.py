"""Certification plots as PNG images: unmerged vs merged, and a run vs its reference run.

One figure per question, one panel per quantity, so a shifter sees the whole run at a glance:

- ``merge_overlay``: the unmerged files' histogram as a filled step, the merged files' drawn
  over it as points; the panel title turns red, with the number of differing bins, where the
  two differ (they must be identical).
- ``reference_overlay``: the run as a filled step, the reference run scaled to the same number
  of entries as points with their statistical errors, the chi-square and p-value in the corner;
  failing panels are framed in red.

matplotlib's Agg backend, no display needed; figures are closed after rendering so a long-lived
server does not accumulate them.
"""

from __future__ import annotations

import io

import numpy as np

from engine.certify.quantities import QUANTITIES

PASS_COLOR, FAIL_COLOR = "#1a7f37", "#cf222e"
FILL_COLOR, LINE_COLOR = "#9ecae1", "#08519c"
COLUMNS = 5


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = -(-len(QUANTITIES) // COLUMNS)
    fig = Figure(figsize=(3.2 * COLUMNS, 2.5 * rows + 0.6), dpi=80)
    axes = fig.subplots(rows, COLUMNS).ravel()
    # fixed margins: a layout engine measures every label first and doubles the drawing time
    fig.subplots_adjust(left=0.045, right=0.99, top=0.9, bottom=0.08, wspace=0.28, hspace=0.55)
    fig.suptitle(title, fontsize=14, fontweight="bold")
    for extra in axes[len(QUANTITIES) :]:
        extra.set_visible(False)
    return fig, axes


def _edges(histogram) -> np.ndarray:
    return histogram.axes[0].edges


def _step(ax, histogram, values, *, label):
    edges = _edges(histogram)
    ax.stairs(
        values,
        edges,
        fill=True,
        facecolor=FILL_COLOR,
        edgecolor=LINE_COLOR,
        linewidth=1.0,
        label=label,
    )


def _style(ax, label: str, color: str, title: str):
    ax.set_xlabel(label, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9, color=color)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend and the test's figures
    if color == FAIL_COLOR:
        for spine in ax.spines.values():
            spine.set_color(FAIL_COLOR)
            spine.set_linewidth(2)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def merge_overlay(run: int, unmerged, merged, verdict: dict) -> bytes:
    """Unmerged (filled) vs merged (points) of every quantity, with each panel's verdict."""
    tests = {t["quantity"]: t for t in verdict["tests"]}
    state = (
        "identical: merge certified"
        if verdict["passed"]
        else "DIFFERENT: merge fails certification"
    )
    fig, axes = _figure(
        f"Run {run}: unmerged ({unmerged.events:,} events) vs merged "
        f"({merged.events:,} events) — {state}"
    )
    for ax, q in zip(axes, QUANTITIES, strict=False):
        h_u, h_m = unmerged.histograms[q.name], merged.histograms[q.name]
        _step(ax, h_u, h_u.values(), label="unmerged")
        centers = h_m.axes[0].centers
        ax.plot(centers, h_m.values(), "o", color="black", markersize=2.5, label="merged")
        test = tests[q.name]
        _style(
            ax,
            q.label,
            PASS_COLOR if test["passed"] else FAIL_COLOR,
            "identical" if test["passed"] else f"{test['differing_bins']} bins differ",
        )
    axes[0].legend(fontsize=7, frameon=False)
    return _png(fig)


def reference_overlay(run: int, mine, reference_run: int, theirs, verdict: dict) -> bytes:
    """The run (filled) vs the reference run scaled to its entries (points with errors), chi2 per
    panel."""
    tests = {t["quantity"]: t for t in verdict["tests"]}
    state = "compatible" if verdict["passed"] else "INCOMPATIBLE"
    fig, axes = _figure(
        f"Run {run} ({mine.sample}) vs reference run {reference_run} ({theirs.sample}) — "
        f"{state} (chi2 test, p >= alpha)"
    )
    for ax, q in zip(axes, QUANTITIES, strict=False):
        h, r = mine.histograms[q.name], theirs.histograms[q.name]
        values, ref = h.values().astype(float), r.values().astype(float)
        scale = values.sum() / ref.sum() if ref.sum() else 0.0
        _step(ax, h, values, label=f"run {run}")
        ax.errorbar(
            r.axes[0].centers,
            ref * scale,
            yerr=np.sqrt(ref) * scale,
            fmt="o",
            color="#d94801",
            markersize=2.5,
            elinewidth=0.8,
            label=f"run {reference_run} (scaled)",
        )
        test = tests[q.name]
        ok = test["passed"]
        text = f"p = {test['p_value']:.2g}" if test["p_value"] is not None else test["detail"]
        if test["chi2"] is not None:
            text = f"chi2/ndf {test['chi2']:.0f}/{test['ndf']}\n{text}"
        ax.text(
            0.97,
            0.95,
            text,
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color=PASS_COLOR if ok else FAIL_COLOR,
        )
        _style(
            ax, q.label, PASS_COLOR if ok else FAIL_COLOR, "compatible" if ok else "incompatible"
        )
    axes[0].legend(fontsize=7, frameon=False)
    return _png(fig)
