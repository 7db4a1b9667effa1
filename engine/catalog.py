"""What the engine needs of a file catalogue, as protocols, and the declaration rules of a merge.

The engine checks its inputs against a SAM-style catalogue and declares its outputs there, but
holds no catalogue of its own: tmbmerge's catalogue backends implement these protocols
(sqlite, SAM web, MetaCat, an external tool), and so can any package.  Implementations are
found by URL scheme, name or kind through the one entry-point registry, ``engine.plugins``:

- ``Catalog``: SAM records by file name, batched look-ups, lineage, ``declare``; the class
  registered for a URL scheme also has ``from_url`` and ``require_existing``
  (``CatalogBackend``); ``open_catalog(url)`` opens one;
- ``Declarer``: anything that declares a record (every catalogue is one; a site wraps its
  declarations with a plug-in, ``load_declarer``);
- ``Registration``: registers a declared file's replica elsewhere (``--register rucio:...``,
  ``load_registration``).

``declare_record`` applies the declaration rules a merged output needs on top of a catalogue's
own: parents known first (or declared first, by the caller's ``declare_missing``), grandparents
in place of parents if asked, and the not-merged-twice rule (``exclusive_tier``) around a
plug-in declarer.  A merge hands it the record it has just written, so nothing is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

from . import plugins
from .errors import AlreadyMerged, MetadataError, ParameterError, UnknownParent, UsageError

DECLARED = "declared"
ALREADY_DECLARED = "already declared"
DEFAULT_DECLARER = "catalog"


class DeclareResult(NamedTuple):
    """The outcome of one successful declaration."""

    file_name: str
    status: str  # DECLARED or ALREADY_DECLARED
    file_id: int | None  # None when the backend does not report one (exec)


class Budget(Protocol):
    """What a catalogue spent (requests, seconds waiting), for reports."""

    def to_dict(self) -> dict:
        """The figures, JSON-ready."""
        ...


@runtime_checkable
class Declarer(Protocol):
    """Anything that declares a record; every ``Catalog`` is one.

    ``declare`` returns a ``DeclareResult`` or raises an ``engine.errors`` class (a
    ``CatalogError`` for refusals), so the caller can report it.
    """

    def declare(self, metadata: dict) -> DeclareResult:
        """Declare the record ``metadata``."""
        ...


class Catalog(Protocol):
    """A file catalogue as the engine uses it: SAM records by name, and the lineage between them.

    ``queryable`` is False for declare-only catalogues, whose query methods raise
    ``CatalogError``.  Records are dicts with SAM's field names, checksums ``adler32:...``.
    """

    url: str
    queryable: bool
    budget: Budget

    def get(self, file_name: str) -> dict:
        """The record of ``file_name``; ``FileNotDeclared`` if there is none."""
        ...

    def records(self, names: Iterable[str]) -> dict[str, dict]:
        """{name: record} of the declared ones among ``names`` (batched)."""
        ...

    def children_of(
        self, names: Iterable[str], *, data_tier: str | None = None
    ) -> dict[str, list[str]]:
        """{name: its children's names (of ``data_tier`` only, if given)}."""
        ...

    def parents(self, file_name: str) -> list[str]:
        """The names of the parents of ``file_name``, in declared order."""
        ...

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        """The names of the files of ``run`` and/or of ``data_tier``."""
        ...

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        """Declare a record; with ``exclusive_tier``, refuse it when a parent has another child
        of that tier (in the declaration's own transaction where the catalogue has them)."""
        ...

    def exclusive_conflicts(self, metadata: dict, tier: str) -> list[str]:
        """Other files of data tier ``tier`` that are children of the parents of ``metadata``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class CatalogBackend(Protocol):
    """The class registered for a URL scheme (entry-point group ``tmbmerge.catalogs``)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Catalog:
        """The catalogue ``url`` names, opened with the backend's ``options``."""
        ...

    @classmethod
    def require_existing(cls, url: str) -> None:
        """Refuse a ``url`` naming no catalogue yet, where reading one must not create it."""
        ...


class Registration(Protocol):
    """Registers a declared file's replica somewhere (entry-point group
    ``tmbmerge.registrations``, ``factory(spec) -> Registration``)."""

    def register(self, path: Any, metadata: dict) -> str:
        """Register ``path`` (declared with ``metadata``); a status such as "registered"."""
        ...


#: What a class registered under a URL scheme must have to be taken for a catalogue backend.
_BACKEND_METHODS = ("from_url", "require_existing", "get", "records", "declare", "close")


def url_scheme(url: str) -> str:
    """The scheme of a catalogue URL, in lower case."""
    scheme, colon, rest = url.partition(":")
    if not colon or not scheme or not rest:
        raise UsageError(
            f"{url!r} is not a catalogue URL (e.g. sqlite:///path/catalog.db, "
            "samweb+https://HOST/sam/EXP/api)"
        )
    return scheme.lower()


def backend_class(scheme: str) -> CatalogBackend:
    """The catalogue class registered for ``scheme``."""
    cls, target = plugins.load(plugins.CATALOGS, scheme, what="catalogue scheme")
    if not (
        isinstance(cls, type)
        and all(callable(getattr(cls, method, None)) for method in _BACKEND_METHODS)
    ):
        raise UsageError(
            f"catalogue scheme {scheme!r} is registered to {target}, which is not a Catalog"
        )
    return cast(CatalogBackend, cls)  # a class with the backend's methods, checked just above


def open_catalog(url: str, *, create: bool = True, **options: Any) -> Catalog:
    """Open the catalogue named by ``url``; ``options`` go to the backend's ``from_url``.

    With ``create=False`` a catalogue that does not exist yet is an error
    (``require_existing``): every command but ``catalog import``, and every merge, open
    catalogues so, since a mistyped ``sqlite:///`` path must not become a new, empty catalogue.
    """
    cls = backend_class(url_scheme(url))
    if not create:
        cls.require_existing(url)
    return cls.from_url(url, **options)


def declarer_names() -> list[str]:
    """Names ``load_declarer`` takes: the default (the catalogue itself) and every plug-in."""
    return [DEFAULT_DECLARER] + plugins.names(plugins.DECLARERS)


def load_declarer(name: str | None, catalog: Catalog) -> Declarer:
    """The declarer registered as ``name`` (the catalogue itself for None or ``"catalog"``)."""
    if name in (None, DEFAULT_DECLARER):
        return catalog
    factory, target = plugins.load(plugins.DECLARERS, name, what="declarer", known=declarer_names())
    if not callable(factory):
        raise UsageError(f"declarer {name!r} is registered to {target}, which is not callable")
    declarer = factory(catalog)
    if not isinstance(declarer, Declarer):
        raise UsageError(
            f"declarer {name!r} ({target}) made {declarer!r}, which has no declare(metadata)"
        )
    return declarer


def load_registration(spec: str) -> Registration:
    """The replica registration ``spec`` names: ``KIND:...``, e.g.
    ``rucio:RSE?scope=S&dataset=D``."""
    kind = spec.partition(":")[0]
    factory, target = plugins.load(plugins.REGISTRATIONS, kind, what="replica registration")
    if not callable(factory):
        raise UsageError(
            f"replica registration {kind!r} is registered to {target}, which is not callable"
        )
    registration = factory(spec)
    if not callable(getattr(registration, "register", None)):
        raise UsageError(
            f"replica registration {kind!r} ({target}) made {registration!r}, which has no "
            "register(path, metadata)"
        )
    return registration


# -- the declaration rules of a merged output ---------------------------------------------------


def parent_names(metadata: dict) -> list[str]:
    """The names of the parents a record lists, in order."""
    return [parent["file_name"] for parent in metadata.get("parents", [])]


def unknown_parent_error(file_name: str, missing: list[str]) -> UnknownParent:
    """The error refusing ``file_name``, whose ``missing`` parents are not declared."""
    return UnknownParent(
        f"parents not declared: {', '.join(missing)} "
        "(declare them first, or use declare_parents=True)",
        path=file_name,
    )


def already_merged_error(
    file_name: str, others: list[str], *, after: bool = False
) -> AlreadyMerged:
    """The refusal of a declaration whose inputs are merged already (``exclusive_tier``)."""
    if after:
        return AlreadyMerged(
            f"declared, but its inputs were declared merged into {', '.join(others)} at the same "
            "time: the same events are now in the catalogue twice; retract one of them",
            path=file_name,
        )
    return AlreadyMerged(
        f"not declared: its inputs are merged already into {', '.join(others)}", path=file_name
    )


def declare_record(
    md: dict,
    catalog: Catalog,
    declarer: Declarer | None = None,
    *,
    exclusive_tier: str | None = None,
    grandparents: bool = False,
    declare_missing: Callable[[list[str]], None] | None = None,
) -> DeclareResult:
    """Declare the record ``md`` through ``declarer`` (default: the catalogue itself).

    Its parents must be declared: ``declare_missing(names)`` is asked to declare the missing
    ones first, and without it they are an ``UnknownParent`` error.  ``grandparents``: the
    record is declared with its parents' parents as parents.  ``exclusive_tier``: refused
    (``AlreadyMerged``) when a parent already has another child of that data tier, checked by
    the catalogue as it declares, or just before and after a plug-in declarer's declaration.
    """
    declarer = declarer if declarer is not None else catalog
    if not catalog.queryable:
        if declare_missing is not None or grandparents:
            raise ParameterError(
                f"{catalog.url}: a declare-only catalogue cannot check or declare parents "
                "(nor look them up for grandparents)",
                parameters=("declare_parents", "grandparents"),
            )
        return declarer.declare(md)
    if grandparents:
        md = with_grandparents(md, catalog)
    known = catalog.records(parent_names(md))
    missing = [parent for parent in parent_names(md) if parent not in known]
    if missing:
        if declare_missing is None:
            raise unknown_parent_error(md["file_name"], missing)
        declare_missing(missing)
    if exclusive_tier is None:
        return declarer.declare(md)
    if declarer is catalog:
        return catalog.declare(md, exclusive_tier=exclusive_tier)
    # a plug-in declares: check just before and read the lineage back just after
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
            "grandparents: the parents have no parents of their own in the catalogue",
            path=md["file_name"],
        )
    return out
