"""The one registry of implementations the engine uses but does not hold: found by entry points.

The engine says what it needs as protocols (``engine.catalog``: a catalogue, a declarer, a
replica registration); packages provide implementations and name them in an entry-point group
of their ``pyproject.toml``, tmbmerge's own command-line package among them:

- ``tmbmerge.catalogs``: a URL scheme (``sqlite``, ``samweb+https``) -> its catalogue class;
- ``tmbmerge.declarers``: a declarer's name (``--declarer NAME``) -> ``factory(catalog)``,
  which makes a ``Declarer``;
- ``tmbmerge.registrations``: a replica registration's kind (``rucio``) -> ``factory(spec)``,
  which makes a ``Registration``.

``NAME = "module:attribute"``: adding an implementation is one module plus one line in its
package's ``pyproject.toml``; nothing in the engine changes.  Entry points come from the
installed package metadata (so a source tree is used installed, ``pip install -e .``), and an
implementation is imported only when its name is asked for.
"""

from __future__ import annotations

import importlib

from .errors import UsageError

CATALOGS = "tmbmerge.catalogs"
DECLARERS = "tmbmerge.declarers"
REGISTRATIONS = "tmbmerge.registrations"


def targets(group: str) -> dict[str, str]:
    """Name -> ``module:attribute`` of every implementation registered in ``group``."""
    from importlib.metadata import entry_points  # on first use: not a cost of every start-up

    return {entry.name: entry.value for entry in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names registered in ``group``, sorted."""
    return sorted(targets(group))


def load(group: str, name: str, *, what: str, known: list[str] | None = None) -> tuple[object, str]:
    """The object registered as ``name`` in ``group``, and its ``module:attribute``.

    ``what`` names the kind in errors ("catalogue scheme", "declarer"); ``known`` is the list of
    names an unknown one is told about (default: those registered).  Unknown names and targets
    that cannot be imported are ``UsageError``s.
    """
    found = targets(group)
    if name not in found:
        choices = known if known is not None else sorted(found)
        raise UsageError(f"unknown {what} {name!r} (known: {', '.join(choices)})")
    target = found[name]
    module_name, _, attribute = target.partition(":")
    try:
        loaded: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            loaded = getattr(loaded, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{what} {name!r}: cannot load {target}: {exc}") from None
    return loaded, target
