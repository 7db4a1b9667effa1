"""The catalogue as a merge uses it (``MergeCatalog``): records and checks before, declaring after.

With ``--catalog URL`` a merge takes its inputs' expected size, adler32 and event count from
the catalogue instead of sidecars, and applies two more checks:

- **not merged twice**: an input that already has a merged child in the catalogue is refused
  (even a child of the output's own name: a merge-run elsewhere makes the same names), the
  check D0's 2004 reprocessing plan asked for;
- **nothing missing** (``--expect-complete``): a run whose catalogue lists unmerged files that
  are not among the inputs is refused, naming the missing partitions (a premature merge).

After the output is verified and published, ``declare`` declares the record the merge wrote
for it (its sidecar's contents, passed on, not read back) with its parents, by the engine's
declaration rules (``engine.catalog.declare_record``), with the merged data tier as
``exclusive_tier``: the not-merged-twice check is made again at the moment of declaring (in
the declaration's own transaction for sqlite; just before and after the POST for SAM web), so
two merges of the same inputs racing each other declare once.  A failed declaration never
removes the verified output; it is reported and can be retried with ``tmbmerge declare``.

Batches: ``prefetch`` asks the catalogue about all of a run's inputs at once (records and
merged children, a few requests per hundred files); the look-ups above are then answered from
that.  ``RecordLookup`` carries the records to merge-run's worker processes, which then open no
catalogue of their own.  ``budget`` is what the catalogue cost (for ``--json``).

The catalogue, the declarer and the replica registration are found through the engine's
registry (``engine.catalog``: protocols, ``engine.plugins``: entry points); this module is
imported only when a catalogue is in use.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from ..catalog import (
    DeclareResult,
    declare_record,
    load_declarer,
    load_registration,
    open_catalog,
)
from ..errors import AlreadyMerged, FileNotDeclared, IncompleteRun, UsageError
from ..remote import location
from .plan import PARTITION_IN_NAME

UNMERGED_TIER = "unmerged-thumbnail"


class MergeCatalog:
    """An open catalogue with what a merge asks of it: its inputs' records (prefetched in
    batches), the not-merged-twice and completeness checks, and the declaration (and replica
    registration) of a verified output."""

    def __init__(
        self,
        url: str,
        *,
        declarer: str | None = None,
        merged_tier: str = "thumbnail",
        grandparents: bool = False,
        register: str | None = None,
    ):
        self.url = url
        self.merged_tier = merged_tier
        self.grandparents = grandparents
        self.registration = load_registration(register) if register else None
        self.catalog = open_catalog(
            url, create=False
        )  # a mistyped path is an error, not a new catalogue
        self.declarer = load_declarer(declarer, self.catalog)
        self._merged: dict[str, list[str]] = {}  # input name -> its merged children (prefetched)

    @property
    def budget(self) -> dict:
        """The catalogue's request budget so far, for the report."""
        return self.catalog.budget.to_dict()

    @property
    def queryable(self) -> bool:
        """Whether the catalogue can be asked about files (an ``exec:`` one only declares)."""
        return self.catalog.queryable

    def require_queryable(self, what: str) -> None:
        """Refuse (``UsageError``) to do ``what`` with a declare-only catalogue."""
        if not self.queryable:
            raise UsageError(f"{self.url} is declare-only: it cannot {what}")

    # -- before the merge ------------------------------------------------------------------
    def prefetch(self, paths) -> None:
        """Ask about all these inputs at once: their records and their merged children."""
        if not self.queryable:
            return
        names = list(dict.fromkeys(location(p).name for p in paths))
        declared = self.catalog.records(names)
        self._merged.update(
            self.catalog.children_of(
                [n for n in names if n in declared], data_tier=self.merged_tier
            )
        )

    def record(self, path: Path) -> dict:
        """The catalogue's record of an input (what its crosschecks compare against)."""
        record = self.catalog.records([location(path).name]).get(location(path).name)
        if record is None:
            raise FileNotDeclared("input is not declared in the catalogue", path=path)
        return record

    def lookup(self, paths) -> RecordLookup:
        """The records of ``paths`` (declared ones), to hand to a worker process."""
        return RecordLookup(self.catalog.records(location(p).name for p in paths))

    def check_not_merged(self, path: Path, *, output_name: str) -> None:
        """Refuse an input that already has a merged child (a child of the merged data tier; a
        derived file such as an ntuple is no merge), even one named ``output_name``.

        A child of the same name is no exception: merge-run names outputs after run and
        partitions, so merging the same inputs into another folder (or remaking a declared
        output with --force) makes that name again, with other bytes that can never be
        declared; only a finished output (the journal's) stands, and it is not merged again.
        """
        name = location(path).name
        self.record(path)  # declared, or FileNotDeclared
        if name not in self._merged:
            self._merged.update(self.catalog.children_of([name], data_tier=self.merged_tier))
        merged = self._merged[name]  # not derived files
        if merged:
            same = " (an output of this name is declared already)" if output_name in merged else ""
            raise AlreadyMerged(f"already merged into {', '.join(sorted(merged))}{same}", path=path)

    def check_complete(self, names_by_run: dict[int, set[str]]) -> None:
        """Every unmerged file the catalogue lists for each run must be among the inputs."""
        self.require_queryable("list a run's files for expect_complete=True")
        for run in sorted(names_by_run):
            listed = set(self.catalog.files(run=run, data_tier=UNMERGED_TIER))
            missing = sorted(listed - names_by_run[run])
            if missing:
                raise IncompleteRun(
                    f"run {run} is not complete: {len(missing)} unmerged file(s) in the catalogue "
                    f"are not among the inputs: {describe_missing(missing)}"
                )

    # -- after the merge -------------------------------------------------------------------
    def declare(self, record: dict) -> DeclareResult:
        """Declare a verified, published output's ``record`` (what its sidecar holds), with its
        parents (or their parents, with ``grandparents``), as the merged data tier."""
        return declare_record(
            record,
            self.catalog,
            self.declarer,
            exclusive_tier=self.merged_tier,
            grandparents=self.grandparents,
        )

    def register(self, output: Path, record: dict) -> str | None:
        """With ``--register``: register the declared output's replica (None without it)."""
        if self.registration is None:
            return None
        return self.registration.register(output, record)

    def close(self) -> None:
        """Close the catalogue."""
        self.catalog.close()

    def __enter__(self) -> MergeCatalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordLookup:
    """``lookup(path) -> record``: catalogue records fetched once, picklable for worker
    processes."""

    def __init__(self, records: dict[str, dict]):
        self.records = records

    def __call__(self, path) -> dict:
        """The catalogue record of ``path`` (``FileNotDeclared`` when it has none)."""
        record = self.records.get(location(path).name)
        if record is None:
            raise FileNotDeclared("input is not declared in the catalogue", path=path)
        return record


@contextmanager
def open_merge_catalog(spec):
    """The catalogue a merge spec names (None without ``catalog``), closed after."""
    if spec is None or not spec.catalog:
        yield None
        return
    with MergeCatalog(
        spec.catalog,
        declarer=spec.declarer,
        merged_tier=spec.data_tier,
        grandparents=spec.grandparents,
        register=spec.register,
    ) as catalog:
        yield catalog


def describe_missing(names: list[str]) -> str:
    """The files a run lacks, by partition where their names say it."""
    partitions = [m.group(1) for m in (PARTITION_IN_NAME.search(n) for n in names) if m]
    if len(partitions) == len(names):
        return "partitions " + ", ".join(f"p{p}" for p in partitions) + f" ({', '.join(names)})"
    return ", ".join(names)


def names_by_run(items) -> dict[int, set[str]]:
    """{run: {input file names}} from (name, run) pairs."""
    out: dict[int, set[str]] = defaultdict(set)
    for name, run in items:
        out[run].add(name)
    return out
