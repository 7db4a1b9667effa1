"""Certification: per-run histograms of standard quantities read from event payloads, and their
comparison.

``quantities`` reads the quantities out of decoded blocks, ``histograms`` fills and stores
them per (run, sample), ``compare`` tests unmerged against merged (identical) and a run
against a reference run (chi-square).  Imported only by ``tmbmerge certify`` and the campaign
page, so boost-histogram and scipy stay out of the merge path.
"""

from .compare import Comparison, chi2_test, identical
from .histograms import RunHistograms, fill_files
from .quantities import QUANTITIES

__all__ = ["Comparison", "QUANTITIES", "RunHistograms", "chi2_test", "fill_files", "identical"]
