"""The declaration hook: declare a file from its sidecar, after checking the sidecar against the
file.

``declare_file(data_path, catalog)`` is what ``tmbmerge declare`` and a merge's ``--declare``
call.  It reads ``<file>.json``, validates it, checks that the sidecar names this file and
that the file on disk has the size the sidecar promises (``os.stat``; the adler32 is the
merge's and the verifier's business), checks that the parents are declared, and declares.

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

Declarers: the final ``declare`` calls go to a ``Declarer``, by default the catalogue itself.
A site can wrap them (add site parameters, notify a service, ...) with a plugin registered in
the entry-point group ``tmbmerge.declarers``: ``NAME = "module:factory"``, where
``factory(catalog) -> Declarer``; ``load_declarer(NAME, catalog)`` (and ``--declarer NAME``)
picks it.  Queries (is this parent declared?) always go to the catalogue.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import InputNotFound, MetadataError, MetadataMismatch, UsageError, input_error
from engine.metadata import normalize_metadata, read_sidecar, sidecar_path
from engine.remote import location

from .base import (
    Catalog,
    DeclareResult,
    already_merged_error,
    parent_names,
    placeholder_metadata,
    unknown_parent_error,
)

DECLARER_GROUP = "tmbmerge.declarers"
DEFAULT_DECLARER = "catalog"


@runtime_checkable
class Declarer(Protocol):
    """Anything that declares metadata; every ``Catalog`` is one.

    ``declare`` returns a ``DeclareResult`` or raises an ``engine.errors`` class
    (``CatalogError`` and its subclasses for refusals), so the command line can report it.
    """

    def declare(self, metadata: dict) -> DeclareResult: ...


def declarer_names() -> list[str]:
    """Names usable with ``load_declarer``: the default and every registered plugin."""
    return [DEFAULT_DECLARER] + sorted(entry.name for entry in entry_points(group=DECLARER_GROUP))


def load_declarer(name: str | None, catalog: Catalog) -> Declarer:
    """The declarer registered as ``name`` (the catalogue itself for None or ``"catalog"``)."""
    if name in (None, DEFAULT_DECLARER):
        return catalog
    matches = [entry for entry in entry_points(group=DECLARER_GROUP) if entry.name == name]
    if not matches:
        raise UsageError(f"unknown declarer {name!r} (known: {', '.join(declarer_names())})")
    try:
        factory = matches[0].load()
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"declarer {name!r}: cannot load {matches[0].value}: {exc}") from None
    declarer = factory(catalog)
    if not isinstance(declarer, Declarer):
        raise UsageError(
            f"declarer {name!r} ({matches[0].value}) made {declarer!r}, which has no "
            "declare(metadata)"
        )
    return declarer


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


def checked_sidecar(data_path: Path, *, require_data: bool = True) -> dict:
    """The normalized sidecar of ``data_path``, checked against the file's name and size."""
    raw = read_sidecar(data_path)
    if raw is None:
        raise InputNotFound("no sidecar (metadata) for this file", path=sidecar_path(data_path))
    try:
        md = normalize_metadata(raw)
    except MetadataError as exc:
        raise exc.with_path(sidecar_path(data_path)) from None
    if md["file_name"] != data_path.name:
        raise MetadataMismatch(
            "the sidecar describes another file",
            path=sidecar_path(data_path),
            expected=data_path.name,
            actual=md["file_name"],
        )
    try:
        size = data_path.stat().st_size
    except FileNotFoundError:
        if require_data:
            raise InputNotFound("no such file", path=data_path) from None
        return md
    except OSError as exc:
        raise input_error(exc, data_path, "stat") from None
    if "file_size" not in md:
        raise MetadataError("file_size: missing", path=sidecar_path(data_path))
    if md["file_size"] != size:
        raise MetadataMismatch(
            "file size differs from its sidecar's file_size",
            path=data_path,
            expected=md["file_size"],
            actual=size,
        )
    _check_against_index(data_path, md)
    return md


def _check_against_index(data_path: Path, md: dict) -> None:
    """What the file's own index knows (event count, runs, first and last event) must be what the
    sidecar says: a sidecar claiming run 999 must not declare the file under run 999.  Opening
    reads the header and index only (the adler32 would need the whole file: ``verify`` does it).
    A data file of another format (no reader knows its magic bytes) is declared on its name and
    size alone, as before."""
    from engine.errors import NotATmbFile
    from engine.readers import detect
    from engine.verify.crosscheck import crosscheck_facts, measured_facts, stated_facts

    try:
        reader_class = detect(data_path)
    except NotATmbFile:
        return
    stated = stated_facts(md)._replace(adler32=None)
    with reader_class(data_path) as reader:
        crosscheck_facts(
            data_path,
            measured_facts(reader, None, data_path.name, stated),
            stated,
            source="sidecar",
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
    if not catalog.queryable:
        if declare_parents or grandparents:
            raise UsageError(
                f"{catalog.url}: a declare-only catalogue cannot check or declare parents (nor "
                "look them up for --grandparents)"
            )
        return declarer.declare(md)
    if grandparents:
        md = with_grandparents(md, catalog)
    known = catalog.records(parent_names(md))
    missing = [parent for parent in parent_names(md) if parent not in known]
    if missing and not declare_parents:
        raise unknown_parent_error(name, missing)
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
    return _declare(md, catalog, declarer, exclusive_tier)


def _declare(
    md: dict, catalog: Catalog, declarer: Declarer, exclusive_tier: str | None
) -> DeclareResult:
    if exclusive_tier is None:
        return declarer.declare(md)
    if declarer is catalog:
        return catalog.declare(md, exclusive_tier=exclusive_tier)
    # a plugin declares: check just before and read the lineage back just after
    others = catalog.exclusive_conflicts(md, exclusive_tier)
    if others:
        raise already_merged_error(md["file_name"], others)
    result = declarer.declare(md)
    others = catalog.exclusive_conflicts(md, exclusive_tier)
    if others:
        raise already_merged_error(md["file_name"], others, after=True)
    return result


def with_grandparents(md: dict, catalog: Catalog) -> dict:
    """``md`` with its parents replaced by their own parents (in order, each once)."""
    parents = parent_names(md)
    records = catalog.records(parents)
    missing = [parent for parent in parents if parent not in records]
    if missing:
        raise unknown_parent_error(md["file_name"], missing)
    names = dict.fromkeys(grand for parent in parents for grand in parent_names(records[parent]))
    out = dict(md)
    out["parents"] = [{"file_name": name} for name in names]
    if not out["parents"]:
        raise MetadataError(
            "--grandparents: the parents have no parents of their own in the catalogue",
            path=md["file_name"],
        )
    return out


__all__ = [
    "Declarer",
    "DECLARER_GROUP",
    "checked_sidecar",
    "declare_file",
    "declarer_names",
    "load_declarer",
]
