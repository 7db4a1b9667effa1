"""The declaration hook: declare a file from its sidecar, after checking the sidecar against the
file.

``declare_file(data_path, catalog)`` is what ``tmbmerge declare`` and ``catalog import`` call
(a merge's ``--declare`` hands the engine's ``declare_record`` the record it wrote instead).
It reads ``<file>.json``, validates it, checks that the sidecar names this file and that the
file on disk has the size the sidecar promises (``os.stat``; the adler32 is the merge's and
the verifier's business), checks that the parents are declared, and declares.

Parents: SAM expects parents declared before their children (raw files are declared when
they are taken).  By default an undeclared parent is an ``UnknownParent`` error.  With
``declare_parents=True`` the hook declares missing parents first: from their own sidecars
when found (``<parents_dir>/<parent>.json``, by default beside the data file), recursively,
and otherwise as *placeholders* carrying only the name (``Catalog.placeholder`` parameter).
That is meant for generated data and tests; against a production SAM, declare raw files
the way the experiment does.

Not merged twice: ``exclusive_tier`` (a merge passes its merged data tier) refuses the
declaration when a parent already has another child of that tier.  The catalogue applies it
at the moment of declaring (``Catalog.declare``, race-free where the backend allows); with a
declarer plugin the hook checks before and after the plugin's declaration instead.

Grandparents: with ``grandparents=True`` the file is declared with its parents' parents as
parents (the inputs of a merge are then not needed in the catalogue), as DUNE's merging tools
offer for experiments that do not keep unmerged files there.

Declarers: the final ``declare`` calls go to a ``Declarer`` (``engine.catalog``), by default
the catalogue itself.  A site can wrap them (add site parameters, notify a service, ...) with a
plugin registered in the entry-point group ``tmbmerge.declarers``: ``NAME = "module:factory"``,
where ``factory(catalog) -> Declarer``; ``engine.catalog.load_declarer(NAME, catalog)`` (and
``--declarer NAME``) picks it.  Queries (is this parent declared?) always go to the catalogue.
The rules after reading the sidecar (parents, grandparents, ``exclusive_tier``) are the
engine's ``declare_record``, the one a merge's ``--declare`` uses with the record it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.catalog import Declarer, DeclareResult, declare_record
from engine.errors import MetadataError
from engine.metadata import sidecar_path
from engine.remote import location
from engine.verify.checks import checked_sidecar

from .base import Catalog, placeholder_metadata


def declare_file(
    data_path: str | os.PathLike,
    catalog: Catalog,
    *,
    declare_parents: bool = False,
    parents_dir: str | os.PathLike | None = None,
    declarer: Declarer | None = None,
    require_data: bool = True,
    on_parent: Callable[[DeclareResult], None] | None = None,
    exclusive_tier: str | None = None,
    grandparents: bool = False,
) -> DeclareResult:
    """Declare ``data_path`` from its sidecar (see the module docstring).

    ``require_data=False`` allows declaring from the sidecar alone when the data file is
    absent (importing a directory of sidecars); when the file is present it is checked all
    the same.  ``on_parent`` is told about every parent declared on the way.
    """
    data_path = location(data_path)
    parents_dir = location(parents_dir) if parents_dir is not None else data_path.parent
    return _declare_with_parents(
        data_path,
        catalog,
        declarer if declarer is not None else catalog,
        declare_parents=declare_parents,
        parents_dir=parents_dir,
        require_data=require_data,
        on_parent=on_parent,
        descendants=(),
        exclusive_tier=exclusive_tier,
        grandparents=grandparents,
    )


def _declare_with_parents(
    data_path: Path,
    catalog: Catalog,
    declarer: Declarer,
    *,
    declare_parents: bool,
    parents_dir: Path,
    require_data: bool,
    on_parent: Callable[[DeclareResult], None] | None,
    descendants: tuple[str, ...],
    exclusive_tier: str | None = None,
    grandparents: bool = False,
) -> DeclareResult:
    md = checked_sidecar(data_path, require_data=require_data)
    name = md["file_name"]
    if name in descendants:
        loop = " -> ".join(descendants + (name,))
        raise MetadataError(f"parents: lineage loop ({loop})", path=sidecar_path(data_path))

    def declare_missing(missing: list[str]) -> None:
        for parent in missing:
            parent_path = parents_dir / parent
            if sidecar_path(parent_path).exists():
                result = _declare_with_parents(
                    parent_path,
                    catalog,
                    declarer,
                    declare_parents=True,
                    parents_dir=parents_dir,
                    require_data=False,
                    on_parent=on_parent,
                    descendants=descendants + (name,),
                )
            else:
                result = declarer.declare(placeholder_metadata(parent))
            if on_parent is not None:
                on_parent(result)

    return declare_record(
        md,
        catalog,
        declarer,
        exclusive_tier=exclusive_tier,
        grandparents=grandparents,
        declare_missing=declare_missing if declare_parents else None,
    )


__all__ = ["declare_file"]
