"""``tmbmerge certify``: fill a run's certification histograms from its files, store them, give the
verdict.

``tmbmerge certify UNMERGED_DIR MERGED_DIR --catalog sqlite:///campaign.db`` reads every event
of every file (digests checked), groups the files by run and by sample (``merged`` if the
file's header says it was made by a merge, else ``unmerged``; ``--sample`` forces one), fills
the standard histograms (``engine.certify``) and stores them in the catalogue database, where
the campaign page shows them.  For each run holding both samples it then compares them: merged
histograms must equal unmerged ones exactly.  Exit 0 when every such run is certified, 6 when a
merge changed a histogram (``CertificationFailed``), the file's own error code when one cannot
be read.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from .catalog import CATALOG_ENV


def register(subparsers) -> None:
    import os

    p = subparsers.add_parser(
        "certify",
        help="fill per-run certification histograms and check merged against unmerged",
        description="Histogram standard quantities (multiplicities, track, cluster and hit "
        "quantities, trigger bits) of every event, per run and sample, store them in the "
        "catalogue database, and fail a run whose merged histograms differ from its unmerged "
        "ones.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="DIR|FILE",
        help="unmerged and/or merged files, or folders of them",
    )
    p.add_argument(
        "--catalog",
        default=os.environ.get(CATALOG_ENV),
        help=f"sqlite catalogue URL where the histograms are kept (default: ${CATALOG_ENV})",
    )
    p.add_argument(
        "--sample",
        choices=("auto", "unmerged", "merged"),
        default="auto",
        help="auto (default): merged if the file's header records a merge, else unmerged",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=run_certify)


def classify(paths, forced: str) -> dict[tuple[int, str], list[str]]:
    """{(run, sample): [paths]} from each file's index and header."""
    from engine.errors import InconsistentInputs
    from engine.readers import open_file

    groups: dict[tuple[int, str], list[str]] = defaultdict(list)
    for path in paths:
        with open_file(path) as reader:
            runs = sorted({int(r) for r in reader.events.run.tolist()})
            merged = bool(reader.metadata.get("merge"))
        if len(runs) != 1:
            raise InconsistentInputs(
                f"holds {len(runs)} runs; certification is per run, one run per file", path=path
            )
        sample = forced if forced != "auto" else ("merged" if merged else "unmerged")
        groups[(runs[0], sample)].append(str(path))
    return groups


def fill_and_store(store, groups: dict[tuple[int, str], list[str]]) -> list[dict]:
    """Fill and store the histograms of each (run, sample) group; what was filled, per group."""
    from engine.certify import fill_files

    filled = []
    for (run, sample), paths in sorted(groups.items()):
        histograms = fill_files(paths, run=run, sample=sample)
        store.store_histograms(histograms.to_record())
        filled.append(
            {
                "run": run,
                "sample": sample,
                "files": len(paths),
                "events": histograms.events,
                "malformed": histograms.malformed,
            }
        )
    return filled


def failure_of(verdicts: list[dict]):
    """The ``CertificationFailed`` of the failed runs among ``verdicts`` (None if none failed)."""
    from engine.errors import CertificationFailed

    failed = [v for v in verdicts if v["status"] == "failed"]
    if not failed:
        return None
    differing = [t["quantity"] for t in failed[0]["merge"]["tests"] if not t["passed"]]
    return CertificationFailed(
        f"run {failed[0]['run']}: merged histograms differ from unmerged "
        f"({', '.join(differing) or 'event counts'})"
        + (f"; {len(failed) - 1} more runs failed" if len(failed) > 1 else "")
    )


def run_certify(args) -> int:
    from bindings.serve.certification import certification
    from engine.merge.plan import discover_inputs

    from .serve import _store

    store = _store(args)
    groups = classify(discover_inputs(args.inputs), args.sample)
    filled = fill_and_store(store, groups)
    verdicts = [certification(store, run) for run in sorted({run for run, _ in groups})]
    if args.json:
        json.dump(
            {
                "filled": filled,
                "runs": [
                    {key: v[key] for key in ("run", "status", "detail", "merge")} for v in verdicts
                ],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        for f in filled:
            print(
                f"run {f['run']} {f['sample']}: {f['files']} files, {f['events']:,} events "
                "histogrammed"
                + (f", {f['malformed']} malformed payloads" if f["malformed"] else "")
            )
        for v in verdicts:
            print(f"run {v['run']}: {v['status']} ({v['detail']})")
    failure = failure_of(verdicts)
    if failure is not None:
        raise failure
    return 0


class MergeCertifier:
    """``merge-run --certify``: the inputs' histograms before the merge, the outputs' after.

    The unmerged sample is filled first, so inputs that ``--retire-inputs`` moves or deletes are
    histogrammed while they are there; an input that cannot be read is left out (a robust merge
    leaves it out of the output too, and the merge itself reports it).
    """

    def __init__(self, catalog: str | None, inputs, *, run: int | None):
        from bindings.serve.store import CampaignStore
        from engine.errors import EngineError, UsageError
        from engine.merge.plan import discover_inputs

        if not catalog:
            raise UsageError(
                "--certify keeps the histograms in the catalogue: give --catalog sqlite:///path.db"
            )
        self.store = CampaignStore(catalog)
        groups: dict[tuple[int, str], list[str]] = defaultdict(list)
        for path in discover_inputs(inputs):
            try:
                for key, paths in classify([path], "unmerged").items():
                    if run is None or key[0] == run:
                        groups[key].extend(paths)
            except EngineError:
                continue
        self.runs = sorted(r for r, _ in groups)
        self.filled = fill_and_store(self.store, groups)

    def finish(self, report) -> list[dict]:
        """Fill the outputs' histograms and judge each run: verdicts, and a failure dict per failed
        run."""
        from bindings.serve.certification import certification

        if report.failures:
            return [
                {"run": run, "status": "not certified", "detail": "the merge had failures"}
                for run in self.runs
            ]
        groups = {
            key: paths
            for key, paths in classify([o.output for o in report.outputs], "merged").items()
            if key[0] in self.runs
        }
        self.filled += fill_and_store(self.store, groups)
        verdicts = [certification(self.store, run) for run in self.runs]
        failure = failure_of(verdicts)
        if failure is not None:
            report.failures.append(failure.to_dict())
        return [{key: v[key] for key in ("run", "status", "detail")} for v in verdicts]
