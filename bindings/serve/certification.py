"""A run's certification verdict, from the histograms ``tmbmerge certify`` stored.

Two checks, each per quantity (``engine.certify.compare``):

- **merge**: the merged files' histograms must equal the unmerged files' exactly, and hold
  the same number of events.  Any difference fails certification: the merge changed events.
- **reference** (when a reference run is chosen): the run's histograms (merged if certified,
  else unmerged) against the reference run's, with the chi-square test; a run passes when
  every quantity has p >= alpha.

``status`` is ``certified`` (merge identical, and reference compatible if one was chosen),
``failed``, or ``incomplete`` (a sample was never filled).

Verdicts are kept in a small cache keyed by the digests of the stored records they were made
from (rebuilding 60 histograms and 15 p-values costs ~50 ms; a page and production tools ask
for the same run again and again); a new ``tmbmerge certify`` changes the digest, so a verdict
is never stale.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from threading import Lock

from engine.certify.compare import DEFAULT_ALPHA, chi2_test, identical
from engine.certify.histograms import RunHistograms
from engine.certify.quantities import QUANTITIES
from engine.errors import UsageError

CACHE_SIZE = 256
_cache: OrderedDict = OrderedDict()
_cache_lock = Lock()


def _cached(key, make):
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = make()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _digests(store, run: int) -> tuple:
    return tuple(
        sorted((sample, _digest(text)) for sample, text in store.histogram_texts(run).items())
    )


def load_samples(store, run: int) -> dict[str, RunHistograms]:
    """{sample: histograms} of a run, as stored (parsed once per stored record)."""
    return {
        sample: _cached(
            ("samples", _digest(text)),
            lambda text=text: RunHistograms.from_record(json.loads(text)),
        )
        for sample, text in store.histogram_texts(run).items()
    }


def certification(
    store, run: int, *, reference: int | None = None, alpha: float = DEFAULT_ALPHA
) -> dict:
    """The verdict (see the module docstring); a fresh copy the caller may change."""
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be between 0 and 1, not {alpha}")
    key = (
        "verdict",
        run,
        reference,
        alpha,
        _digests(store, run),
        _digests(store, reference) if reference is not None else None,
    )
    return json.loads(
        _cached(key, lambda: json.dumps(_certification(store, run, reference, alpha)))
    )


def _certification(store, run: int, reference: int | None, alpha: float) -> dict:
    samples = load_samples(store, run)
    result = {
        "run": run,
        "samples": {
            name: {"files": s.files, "events": s.events, "malformed": s.malformed}
            for name, s in samples.items()
        },
        "quantities": [{"name": q.name, "label": q.label} for q in QUANTITIES],
        "merge": None,
        "reference": None,
        "alpha": alpha,
    }
    if not samples:
        result["status"] = "not filled"
        result["detail"] = f"no histograms of run {run}: run tmbmerge certify on its files"
        return result
    problems = []
    if {"unmerged", "merged"} <= samples.keys():
        unmerged, merged = samples["unmerged"], samples["merged"]
        tests = [
            identical(q.name, unmerged.counts(q.name), merged.counts(q.name)) for q in QUANTITIES
        ]
        same_events = unmerged.events == merged.events
        passed = all(t.passed for t in tests) and same_events
        result["merge"] = {
            "passed": passed,
            "events": {"unmerged": unmerged.events, "merged": merged.events},
            "tests": [t.to_dict() for t in tests],
        }
        if not passed:
            problems.append("merged histograms differ from unmerged")
    else:
        missing = sorted({"unmerged", "merged"} - samples.keys())
        problems.append(f"no {' or '.join(missing)} histograms")
    if reference is not None:
        theirs = load_samples(store, reference)
        if not theirs:
            raise UsageError(
                f"reference run {reference} has no histograms (run tmbmerge certify on it)"
            )
        mine, ref = _preferred(samples), _preferred(theirs)
        tests = [
            chi2_test(q.name, mine.counts(q.name), ref.counts(q.name), alpha=alpha)
            for q in QUANTITIES
        ]
        passed = all(t.passed for t in tests)
        result["reference"] = {
            "run": reference,
            "sample": mine.sample,
            "reference_sample": ref.sample,
            "passed": passed,
            "tests": [t.to_dict() for t in tests],
        }
        if not passed:
            failing = [t.quantity for t in tests if not t.passed]
            problems.append(f"incompatible with run {reference}: {', '.join(failing)}")
    failed = (result["merge"] is not None and not result["merge"]["passed"]) or (
        result["reference"] is not None and not result["reference"]["passed"]
    )
    result["status"] = (
        "failed" if failed else "incomplete" if result["merge"] is None else "certified"
    )
    result["detail"] = "; ".join(problems) or "merged histograms identical to unmerged" + (
        f", compatible with run {reference}" if reference is not None else ""
    )
    return result


def _preferred(samples: dict[str, RunHistograms]) -> RunHistograms:
    return samples.get("merged") or samples["unmerged"]
