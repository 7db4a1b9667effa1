"""Files named by URL (``root://``, ``roots://``, ``https://``, ``davs://``): where remote bytes
enter.

A production merge reads the files of a run where a site's storage keeps them (dCache, EOS,
XRootD) and stages its output back there.  This package holds everything about that, and
nothing else in the engine knows a protocol:

- ``RemotePath`` (here): a file or folder named by URL, offering the few ``pathlib.Path``
  operations the merge steps use on their inputs (``name``, ``parent``, ``with_name``, ``/``,
  ``read_text``, ``exists``, ``iterdir``, ``stat``).  ``location(text)`` returns one for a URL
  and a ``Path`` for anything else, so commands take local and remote names alike.
- ``xrootd.py`` and ``https.py``: one protocol each (open for reading, stat, list, checksum
  query, upload, rename, remove), imported only when a URL of theirs is met: a local merge
  never loads the XRootD client.
- ``prefetch.py``: the block source readers use for a remote file: parallel range reads ahead
  of the reader, so a high-latency link is kept full; the reader's checks are unchanged.
- ``stageout.py``: an output written and verified locally, uploaded under a temporary name,
  its adler32 asked of the server and compared, then renamed into place.
- ``credentials.py``: X.509 proxy and WLCG bearer token discovery; ``retry.py``: timeouts and
  retries with backoff, failures turned into one-line input (exit 3) or output (exit 7) errors
  naming the URL.
"""

from __future__ import annotations

import importlib
import os
import posixpath
import urllib.parse
from pathlib import Path

#: URL schemes and the protocol module that serves each.
SCHEMES = {
    "root": "xrootd",
    "roots": "xrootd",
    "xroot": "xrootd",
    "xroots": "xrootd",
    "https": "https",
    "http": "https",
    "davs": "https",
    "dav": "https",
}


def is_url(name) -> bool:
    """Whether ``name`` is a URL of a protocol tmbmerge reads (not a local path)."""
    if isinstance(name, RemotePath):
        return True
    if not isinstance(name, str):
        return False
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def location(name):
    """A ``RemotePath`` for a URL, a ``Path`` for anything else (already-made ones pass through)."""
    if isinstance(name, RemotePath):
        return name
    if is_url(name):
        return RemotePath(name)
    return Path(name)


def protocol(scheme: str):
    """The protocol module for a URL scheme, imported on first use."""
    return importlib.import_module(f"{__name__}.{SCHEMES[scheme.lower()]}")


class RemotePath:
    """A file or folder on a storage server, named by its URL; immutable, hashable, ordered.

    The path keeps its spelling (``root://host//store/x`` keeps its double slash: XRootD reads
    it as an absolute path).  ``str()`` is the URL, which is what errors and reports show.
    It has no ``__fspath__``: handing it to ``open()`` by mistake fails instead of writing a
    local file named after a URL.
    """

    __slots__ = ("url", "scheme", "netloc", "path")

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(str(url))
        if parts.scheme.lower() not in SCHEMES or not parts.netloc:
            from ..errors import UsageError

            raise UsageError("not a root://, roots://, https:// or davs:// URL", path=str(url))
        self.scheme = parts.scheme.lower()
        self.netloc = parts.netloc
        path = parts.path or "/"
        if self.protocol_name == "xrootd" and not path.startswith("//"):
            path = "/" + path  # root://host/store/x and root://host//store/x name the same file
        self.path = path
        self.url = f"{self.scheme}://{self.netloc}{self.path}" + (
            f"?{parts.query}" if parts.query else ""
        )

    # -- naming ----------------------------------------------------------------------------
    @property
    def protocol_name(self) -> str:
        """The protocol serving this URL: ``xrootd`` or ``https``."""
        return SCHEMES[self.scheme]

    @property
    def protocol(self):
        """The protocol module (``xrootd.py``, ``https.py``), imported on first use."""
        return protocol(self.scheme)

    @property
    def server(self) -> str:
        """``scheme://host[:port]``, without the path."""
        return f"{self.scheme}://{self.netloc}"

    @property
    def name(self) -> str:
        """The last component of the path, as ``Path.name``."""
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def suffix(self) -> str:
        """The name's extension, as ``Path.suffix``."""
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> RemotePath:
        """The folder holding this path, on the same server."""
        return RemotePath(self.server + (posixpath.dirname(self.path.rstrip("/")) or "/"))

    def with_name(self, name: str) -> RemotePath:
        """This path with its last component replaced."""
        return self.parent / name

    def with_suffix(self, suffix: str) -> RemotePath:
        """This path with its name's extension replaced."""
        return self.with_name(posixpath.splitext(self.name)[0] + suffix)

    def __truediv__(self, name) -> RemotePath:
        return RemotePath(f"{self.server}{self.path.rstrip('/')}/{name}")

    def resolve(self) -> RemotePath:
        """This path: a URL has no symlinks to resolve on this side."""
        return self

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and (self.server, self.path.rstrip("/")) == (
            other.server,
            other.path.rstrip("/"),
        )

    def __hash__(self) -> int:
        return hash((self.server, self.path.rstrip("/")))

    def __lt__(self, other) -> bool:
        return str(self) < str(other)

    # -- what the server says (each is one request, retried) -------------------------------
    def stat(self):
        """``os.stat_result``-like: ``st_size``, ``st_mode`` (regular file or folder)."""
        return self.protocol.stat(self)

    def exists(self) -> bool:
        """Whether the server has a file or folder here."""
        try:
            self.stat()
        except FileNotFoundError:
            return False
        return True

    def is_dir(self) -> bool:
        """Whether the server has a folder here."""
        import stat as statmod

        try:
            return statmod.S_ISDIR(self.stat().st_mode)
        except FileNotFoundError:
            return False

    def is_file(self) -> bool:
        """Whether the server has a regular file here."""
        import stat as statmod

        try:
            return statmod.S_ISREG(self.stat().st_mode)
        except FileNotFoundError:
            return False

    def iterdir(self):
        """The folder's entries, as ``RemotePath``s (a listing over the protocol)."""
        return iter(self.protocol.listdir(self))

    def read_bytes(self) -> bytes:
        """The whole file, in one read (sidecars: small files)."""
        return self.protocol.read_whole(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        """The whole file, decoded."""
        return self.read_bytes().decode(encoding)

    # -- changes (retiring inputs) -----------------------------------------------------------
    def unlink(self) -> None:
        """Delete the file on the server (retried; failures are output errors)."""
        from .retry import retrying

        retrying(lambda: self.protocol.remove(self), self, "cannot delete", output=True)

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Create the folder on the server (retried; failures are output errors)."""
        from .retry import retrying

        retrying(lambda: self.protocol.mkdir(self), self, "cannot create folder", output=True)

    def rename_to(self, target: RemotePath | Path) -> None:
        """Server-side rename; never replaces ``target``, never crosses servers."""
        from ..errors import OutputExists, UsageError
        from .retry import RemoteFailure, as_engine_error

        if not isinstance(target, RemotePath) or target.server != self.server:
            raise UsageError(
                f"a remote file moves only within its server, not to {target}", path=self
            )
        try:
            self.protocol.rename(self, target, overwrite=False)
        except RemoteFailure as failure:
            if failure.message == "destination exists":
                raise OutputExists("a file of this name is already there", path=target) from None
            raise as_engine_error(failure, self, f"cannot move to {target}", output=True) from None

    def open_source(self):
        """A block source for reading this file (``engine.source`` interface), with prefetch."""
        from .prefetch import PrefetchingSource

        return PrefetchingSource(self.protocol.open_reader(self), self)


def staging_dir() -> Path:
    """Where remote outputs are written and verified before upload: ``$TMBMERGE_STAGING`` or a
    folder under the system's temporary directory."""
    folder = Path(os.environ.get("TMBMERGE_STAGING") or _default_staging_dir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _default_staging_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "tmbmerge-staging"


def release_staging_dir() -> None:
    """Remove the default staging directory if nothing is left in it (nothing stays in ``$TMPDIR``);
    a ``$TMBMERGE_STAGING`` the user chose is theirs and stays."""
    if os.environ.get("TMBMERGE_STAGING"):
        return
    try:
        os.rmdir(_default_staging_dir())
    except OSError:
        pass  # not empty (another command's staging, a merge-run's journal) or already gone


__all__ = ["RemotePath", "is_url", "location", "protocol", "release_staging_dir", "staging_dir"]
