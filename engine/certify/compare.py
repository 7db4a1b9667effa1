"""Comparing histograms: unmerged vs merged must be identical; a run vs a reference must be
compatible.

Two tests, because the questions differ:

- ``identical``: a merge copies events, so every histogram of the merged files must equal the
  unmerged files' bin for bin (under- and overflow included); any difference fails.
- ``chi2_test``: two runs are different samples of (one hopes) the same physics, so their
  histograms are compared for shape with the chi-square test for two unweighted histograms
  (the "UU" test of NIST/ROOT's ``Chi2Test``: each normalized to its own total; bins empty in
  both are not counted; ndf = bins used - 1), p-value from scipy.  A run passes when p >= alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one quantity's histograms (identical, or chi-square)."""

    quantity: str
    test: str  # "identical" or "chi2"
    passed: bool
    chi2: float | None = None
    ndf: int | None = None
    p_value: float | None = None
    differing_bins: int | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        """The comparison as JSON-ready data."""
        return {key: value for key, value in self.__dict__.items()}


def identical(quantity: str, a: np.ndarray, b: np.ndarray) -> Comparison:
    """Compare two histograms bin by bin: they must be equal."""
    differing = int(np.count_nonzero(np.asarray(a) != np.asarray(b)))
    detail = (
        "identical"
        if not differing
        else f"{differing} bins differ ({int(np.sum(a))} vs {int(np.sum(b))} entries)"
    )
    return Comparison(
        quantity, "identical", differing == 0, differing_bins=differing, detail=detail
    )


def chi2_test(
    quantity: str, a: np.ndarray, b: np.ndarray, *, alpha: float = DEFAULT_ALPHA
) -> Comparison:
    """Compare two histograms' shapes with a chi-square test at significance ``alpha``."""
    from scipy.stats import chi2 as chi2_distribution

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n_a, n_b = a.sum(), b.sum()
    if n_a == 0 or n_b == 0:
        both = n_a == n_b
        return Comparison(
            quantity, "chi2", bool(both), detail="both empty" if both else "one histogram is empty"
        )
    used = (a + b) > 0
    ndf = int(used.sum()) - 1
    if ndf < 1:
        return Comparison(
            quantity, "chi2", True, 0.0, 0, 1.0, detail="a single bin: nothing to compare"
        )
    a, b = a[used], b[used]
    statistic = float(np.sum((n_b * a - n_a * b) ** 2 / (a + b)) / (n_a * n_b))
    p_value = float(chi2_distribution.sf(statistic, ndf))
    return Comparison(
        quantity,
        "chi2",
        p_value >= alpha,
        statistic,
        ndf,
        p_value,
        detail=f"chi2/ndf {statistic:.1f}/{ndf}, p = {p_value:.3g}",
    )
