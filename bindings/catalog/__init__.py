"""File catalogues: where TMB files are declared, looked up and linked to their parents.

``open_catalog(url)`` returns a ``Catalog`` for a URL:

- ``sqlite:///abs/path.db`` or ``sqlite:relative.db``: the embedded catalogue (default);
- ``samweb+https://HOST/sam/EXPERIMENT/api`` (or ``samweb+http``, or plain ``https://...``): a SAM
  web server;
- ``metacat+https://HOST/PATH?namespace=NS&dataset=NS:NAME``: a MetaCat server;
- ``exec:COMMAND``: a site's own declaration tool (declare-only).

Backends are found through the ``tmbmerge.catalogs`` entry points (see ``registry``);
``hook.declare_file`` is the declaration hook.  docs/CATALOG.md describes it all.
"""

from .base import ALREADY_DECLARED, DECLARED, Catalog, DeclareResult
from .registry import open_catalog

__all__ = ["ALREADY_DECLARED", "DECLARED", "Catalog", "DeclareResult", "open_catalog"]
