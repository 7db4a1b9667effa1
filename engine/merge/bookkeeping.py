"""Catalogue bookkeeping around a merge: crosschecks before, declaration after.

With ``--catalog URL`` a merge takes its inputs' expected size, adler32 and event count from
the catalogue instead of sidecars, and applies two more checks:

- **not merged twice**: an input that already has a merged child in the catalogue is refused
  (even a child of the output's own name: a merge-run elsewhere makes the same names), the
  check D0's 2004 reprocessing plan asked for;
- **nothing missing** (``--expect-complete``): a run whose catalogue lists unmerged files that
  are not among the inputs is refused, naming the missing partitions (a premature merge).

After the output is verified and published, ``declare`` declares it with its parents through
the catalogue's declaration hook (``bindings.catalog.hook``).  A failed declaration never
removes the verified output; it is reported and can be retried with ``tmbmerge declare``.

The catalogue backends live in ``bindings.catalog`` (they are a face to the outside world);
this module is the engine's only door to them, imported only when a catalogue is in use.
"""

from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from ..errors import AlreadyMerged, FileNotDeclared, IncompleteRun, UsageError
from ..remote import location

UNMERGED_TIER = "unmerged-thumbnail"
_PARTITION_RE = re.compile(r"_p(\d+)\.[A-Za-z0-9]+$")


class CatalogBookkeeping:
    def __init__(self, url: str, *, declarer: str | None = None, merged_tier: str = "thumbnail"):
        from bindings.catalog import open_catalog
        from bindings.catalog.hook import load_declarer

        self.url = url
        self.merged_tier = merged_tier
        self.catalog = open_catalog(url)
        self.declarer = load_declarer(declarer, self.catalog)

    @property
    def queryable(self) -> bool:
        return self.catalog.queryable

    def require_queryable(self, what: str) -> None:
        if not self.queryable:
            raise UsageError(f"{self.url} is declare-only: it cannot {what}")

    # -- before the merge ------------------------------------------------------------------
    def metadata(self, path: Path) -> dict:
        """The catalogue's record of an input (what its crosschecks compare against)."""
        try:
            return self.catalog.get(location(path).name)
        except FileNotDeclared as exc:
            raise FileNotDeclared("input is not declared in the catalogue", path=path) from exc

    def check_not_merged(self, path: Path, *, output_name: str) -> None:
        """Refuse an input that already has a merged child (a child of the merged data tier; a
        derived file such as an ntuple is no merge), even one named ``output_name``.

        A child of the same name is no exception: merge-run names outputs after run and
        partitions, so merging the same inputs into another folder (or remaking a declared
        output with --force) makes that name again, with other bytes that can never be
        declared; only a finished output (the journal's) stands, and it is not merged again.
        """
        try:
            children = self.catalog.children(location(path).name)
        except FileNotDeclared as exc:
            raise FileNotDeclared("input is not declared in the catalogue", path=path) from exc
        merged = [child for child in children
                  if self.catalog.get(child).get("data_tier") == self.merged_tier]   # not derived files
        if merged:
            same = " (an output of this name is declared already)" if output_name in merged else ""
            raise AlreadyMerged(f"already merged into {', '.join(sorted(merged))}{same}", path=path)

    def check_complete(self, names_by_run: dict[int, set[str]]) -> None:
        """Every unmerged file the catalogue lists for each run must be among the inputs."""
        self.require_queryable("list a run's files for --expect-complete")
        for run in sorted(names_by_run):
            listed = set(self.catalog.files(run=run, data_tier=UNMERGED_TIER))
            missing = sorted(listed - names_by_run[run])
            if missing:
                raise IncompleteRun(f"run {run} is not complete: {len(missing)} unmerged file(s) in the catalogue "
                                    f"are not among the inputs: {describe_missing(missing)}")

    # -- after the merge -------------------------------------------------------------------
    def declare(self, output: Path):
        """Declare a verified, published output (with its parents) from its sidecar."""
        from bindings.catalog.hook import declare_file

        return declare_file(output, self.catalog, declarer=self.declarer)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "CatalogBookkeeping":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def open_bookkeeping(spec):
    """The catalogue bookkeeping a merge spec asks for (None without ``--catalog``), closed after."""
    if not spec.catalog:
        yield None
        return
    with CatalogBookkeeping(spec.catalog, declarer=spec.declarer, merged_tier=spec.data_tier) as catalog:
        yield catalog


def describe_missing(names: list[str]) -> str:
    partitions = [m.group(1) for m in (_PARTITION_RE.search(n) for n in names) if m]
    if len(partitions) == len(names):
        return "partitions " + ", ".join(f"p{p}" for p in partitions) + f" ({', '.join(names)})"
    return ", ".join(names)


def names_by_run(items) -> dict[int, set[str]]:
    """{run: {input file names}} from (name, run) pairs."""
    out: dict[int, set[str]] = defaultdict(set)
    for name, run in items:
        out[run].add(name)
    return out
