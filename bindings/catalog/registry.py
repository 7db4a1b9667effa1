"""Which class serves which catalogue URL: entry points, with a built-in table as fallback.

A backend is a ``Catalog`` subclass registered under its URL scheme in the entry-point group
``tmbmerge.catalogs`` (``sqlite = "bindings.catalog.sqlite:SqliteCatalog"``).  Adding a
backend is one module plus one line in its package's ``pyproject.toml``; nothing here
changes.  The built-in table serves the same schemes when tmbmerge runs from a source tree
that was never installed (no entry points then); an installed entry point of the same scheme
wins over it.  Backends are imported only when their scheme is asked for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from engine.errors import UsageError

from .base import Catalog

ENTRY_POINT_GROUP = "tmbmerge.catalogs"

BUILTIN_BACKENDS = {
    "sqlite": "bindings.catalog.sqlite:SqliteCatalog",
    "samweb+https": "bindings.catalog.samweb:SamWebCatalog",
    "samweb+http": "bindings.catalog.samweb:SamWebCatalog",
    # https://HOST/sam/EXP/api, as samweb users write it
    "https": "bindings.catalog.samweb:SamWebCatalog",
    "http": "bindings.catalog.samweb:SamWebCatalog",
    "metacat+https": "bindings.catalog.metacat:MetaCatCatalog",
    "metacat+http": "bindings.catalog.metacat:MetaCatCatalog",
    "exec": "bindings.catalog.exec_tool:ExecCatalog",
}


def backend_targets() -> dict[str, str]:
    """Scheme -> ``module:Class`` of every known backend."""
    targets = dict(BUILTIN_BACKENDS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        targets[entry.name] = entry.value
    return targets


def backend_class(scheme: str) -> type[Catalog]:
    """The ``Catalog`` subclass registered for ``scheme``."""
    targets = backend_targets()
    if scheme not in targets:
        raise UsageError(
            f"unknown catalogue scheme {scheme!r} (known: {', '.join(sorted(targets))})"
        )
    module_name, _, attribute = targets[scheme].partition(":")
    try:
        cls = importlib.import_module(module_name)
        for part in attribute.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"catalogue scheme {scheme!r}: cannot load {targets[scheme]}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Catalog)):
        raise UsageError(
            f"catalogue scheme {scheme!r} is registered to {targets[scheme]}, which is not a "
            "Catalog"
        )
    return cls


def url_scheme(url: str) -> str:
    scheme, colon, rest = url.partition(":")
    if not colon or not scheme or not rest:
        raise UsageError(
            f"{url!r} is not a catalogue URL (e.g. sqlite:///path/catalog.db, samweb+https://HOST/sam/EXP/api)"
        )
    return scheme.lower()


def open_catalog(url: str, *, create: bool = True, **options) -> Catalog:
    """Open the catalogue named by ``url``; ``options`` go to the backend's ``from_url``.

    With ``create=False`` a catalogue that does not exist yet is an error
    (``Catalog.require_existing``): every command but ``catalog import``, and every merge, open
    catalogues so, since a mistyped ``sqlite:///`` path must not become a new, empty catalogue.
    """
    cls = backend_class(url_scheme(url))
    if not create:
        cls.require_existing(url)
    return cls.from_url(url, **options)
