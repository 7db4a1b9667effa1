"""File catalogues: where TMB files are declared, looked up and linked to their parents.

``open_catalog(url)`` returns a ``Catalog`` for a URL:

- ``sqlite:///abs/path.db`` or ``sqlite:relative.db``: the embedded catalogue (default);
- ``samweb+https://HOST/sam/EXPERIMENT/api`` (or ``samweb+http``, or plain ``https://...``): a SAM
  web server;
- ``metacat+https://HOST/PATH?namespace=NS&dataset=NS:NAME``: a MetaCat server;
- ``exec:COMMAND``: a site's own declaration tool (declare-only).

Each backend implements the engine's ``engine.catalog.Catalog`` protocol (through the base
class ``base.Catalog``) and is registered under its URL scheme in the entry-point group
``tmbmerge.catalogs`` (tmbmerge's ``pyproject.toml``); ``open_catalog`` is the engine's, which
finds them through its one registry, ``engine.plugins``.  ``hook.declare_file`` declares a file
from its sidecar.  docs/CATALOG.md describes it all.
"""

from engine.catalog import open_catalog

from .base import ALREADY_DECLARED, DECLARED, Catalog, DeclareResult

__all__ = ["ALREADY_DECLARED", "DECLARED", "Catalog", "DeclareResult", "open_catalog"]
