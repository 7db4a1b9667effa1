"""``root://`` (and ``roots://``): files on an XRootD server, through the XRootD client library.

Why the XRootD Python client (``xrootd`` on PyPI, manylinux wheels with the client library
inside) rather than fsspec-xrootd: it is the layer fsspec-xrootd itself calls, and it gives
what a merge needs directly: concurrent reads on one open file, vector reads, the checksum
query (``kXR_Qcksum``), server-side rename, and the client's own retry and security plugins
(X.509 proxies and bearer tokens are read from the usual variables by the library).  fsspec
would add a caching file layer and an event loop we would have to bypass for every read.

The client's own connection retries are bounded by ``TMBMERGE_REMOTE_TIMEOUT`` (set before the
library is first loaded), so a dead server is an error within that time, not a two-minute wait.
"""

from __future__ import annotations

import os
import stat as statmod

from .retry import DENIED, FAILED, MISSING, TRANSIENT, RemoteFailure, retrying, timeout


def _client():
    limit = str(timeout())
    # the library reads these once, when it starts: bound its reconnect attempts by our timeout
    os.environ.setdefault("XRD_CONNECTIONWINDOW", limit)
    os.environ.setdefault("XRD_CONNECTIONRETRY", "1")
    os.environ.setdefault("XRD_REQUESTTIMEOUT", limit)
    os.environ.setdefault("XRD_STREAMTIMEOUT", limit)
    os.environ.setdefault("XRD_STREAMERRORWINDOW", "0")
    try:
        from XRootD import client
    except ImportError:
        from ..errors import UsageError

        raise UsageError(
            "root:// needs the XRootD client: pip install 'tmbmerge[remote]'"
        ) from None
    return client


# kXR error codes the server answers with (XProtocol.hh)
_KXR_NOT_AUTHORIZED, _KXR_NOT_FOUND, _KXR_OVERLOADED, _KXR_FS_ERROR = 3010, 3011, 3024, 3005
_ERR_RESPONSE = 400  # XrdCl errErrorResponse: the server answered with an error


def _check(status, what: str = "") -> None:
    if status.ok:
        return
    message = (status.message or "failed").strip().splitlines()[0]
    if status.code == _ERR_RESPONSE:
        if status.errno == _KXR_NOT_FOUND or "No such file" in message:
            kind = MISSING
        elif status.errno == _KXR_NOT_AUTHORIZED or "ermission denied" in message:
            kind = DENIED
        elif status.errno == _KXR_OVERLOADED:
            kind = TRANSIENT
        else:
            kind = FAILED
    else:
        kind = TRANSIENT  # connection refused or lost, socket or request timeout
    raise RemoteFailure(kind, message)


def _fs(rp):
    return _client().FileSystem(rp.server)


# -- reading -----------------------------------------------------------------------------------


class XRootDReader:
    """One open file: concurrent ``read``s and ``vector_read``s are safe on it."""

    #: the server's limit per vector-read element (XProtocol maxRVdsz)
    VECTOR_CHUNK = 2097136

    def __init__(self, rp):
        import threading

        self.rp = rp
        self._client = _client()
        self._lock = threading.Lock()
        self._file = None
        info = retrying(self._open, rp, "cannot open")
        if info.flags & self._client.flags.StatInfoFlags.IS_DIR:
            from ..errors import InputError

            raise InputError("is a directory, not a file", path=rp.url)
        self.size = int(info.size)

    def _open(self):
        handle = self._client.File()
        status, _ = handle.open(self.rp.url, self._client.flags.OpenFlags.READ, timeout=timeout())
        _check(status)
        status, info = handle.stat(timeout=timeout())
        _check(status)
        self._file = handle
        return info

    def _call(self, method: str, *args):
        """One request on the open file; after a lost connection the client has closed it, so
        the next try opens it again."""
        with self._lock:
            handle = self._file
            if handle is None or not handle.is_open():
                self._open()
                handle = self._file
        try:
            status, answer = getattr(handle, method)(*args, timeout=timeout())
        except ValueError as exc:  # the client closed the file after a failure on another thread
            raise RemoteFailure(TRANSIENT, str(exc)) from None
        _check(status)
        return answer

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        return retrying(
            lambda: self._call("read", offset, length), self.rp, f"read error at offset {offset}"
        )

    def read_many(self, ranges) -> list[bytes]:
        """Several (offset, length) ranges in one round trip (a vector read)."""
        chunks = []
        for offset, length in ranges:
            for start in range(offset, offset + length, self.VECTOR_CHUNK):
                chunks.append((start, min(self.VECTOR_CHUNK, offset + length - start)))

        def step():
            return [bytes(c.buffer) for c in self._call("vector_read", chunks).chunks]

        pieces = iter(retrying(step, self.rp, f"read error at offset {ranges[0][0]}"))
        out = []
        for _, length in ranges:
            got = bytearray()
            while len(got) < length:
                got += next(pieces)
            out.append(bytes(got))
        return out

    def current_size(self) -> int:
        """The file's size on the server now."""
        return retrying(lambda: int(self._call("stat", True).size), self.rp, "cannot stat")

    def close(self) -> None:
        """Close the remote file (errors closing are ignored)."""
        if self._file is not None and self._file.is_open():
            try:
                self._file.close(timeout=5)
            except Exception:
                pass


def open_reader(rp) -> XRootDReader:
    """Open ``rp`` for reading."""
    return XRootDReader(rp)


# -- the namespace -----------------------------------------------------------------------------


def stat(rp):
    """``os.stat_result``-like facts of ``rp``."""
    client = _client()

    def step():
        status, info = _fs(rp).stat(rp.path, timeout=timeout())
        _check(status)
        return info

    info = retrying(step, rp, "cannot stat")
    kind = statmod.S_IFDIR if info.flags & client.flags.StatInfoFlags.IS_DIR else statmod.S_IFREG
    return os.stat_result((kind | 0o644, 0, 0, 1, 0, 0, int(info.size), 0, int(info.modtime), 0))


def listdir(rp) -> list:
    """The entries of folder ``rp``."""

    def step():
        status, listing = _fs(rp).dirlist(rp.path, timeout=timeout())
        _check(status)
        return [entry.name for entry in listing]

    return sorted(rp / name for name in retrying(step, rp, "cannot list folder"))


def read_whole(rp) -> bytes:
    """The whole file."""
    reader = open_reader(rp)
    try:
        return reader.read(0, reader.size) if reader.size else b""
    finally:
        reader.close()


def checksum(rp, *, output: bool = True) -> int:
    """The server's adler32 of the file (a checksum query)."""
    client = _client()

    def step():
        status, answer = _fs(rp).query(client.flags.QueryCode.CHECKSUM, rp.path, timeout=timeout())
        _check(status)
        return answer

    answer = retrying(step, rp, "checksum query failed", output=output)
    text = bytes(answer).rstrip(b"\x00").decode("ascii", "replace").split()
    if len(text) != 2 or text[0].lower() != "adler32":
        from ..errors import OutputError

        raise OutputError(f"server answered the adler32 query with {' '.join(text)!r}", path=rp.url)
    return int(text[1], 16)


# -- writing -----------------------------------------------------------------------------------

UPLOAD_CHUNK = 8 << 20


def upload(local_path, rp) -> None:
    """Write ``local_path`` to a new file at ``rp`` (refused if it exists), opened
    persist-on-successful-close so the server drops it if the client vanishes; any failure
    removes what was written.  Not retried in part: the caller retries the whole upload."""
    client = _client()
    handle = client.File()
    flags = client.flags.OpenFlags
    mode = client.flags.AccessMode
    status, _ = handle.open(
        rp.url,
        flags.NEW | flags.MAKEPATH | flags.POSC,
        mode.UR | mode.UW | mode.GR | mode.OR,
        timeout=timeout(),
    )
    _check(status)
    try:
        with open(local_path, "rb") as source:
            offset = 0
            while data := source.read(UPLOAD_CHUNK):
                status, _ = handle.write(data, offset, len(data), timeout=timeout())
                _check(status)
                offset += len(data)
        status, _ = handle.sync(timeout=timeout())
        _check(status)
        status, _ = handle.close(timeout=timeout())
        _check(status)
    except BaseException:
        try:
            handle.close(timeout=5)
        except Exception:
            pass
        remove(rp, quiet=True)
        raise


def rename(source, dest, *, overwrite: bool = False) -> None:
    """Server-side rename (``kXR_mv``); refuses to replace ``dest`` unless ``overwrite``."""
    fs = _fs(source)
    if not overwrite:
        status, _ = fs.stat(dest.path, timeout=timeout())
        if status.ok:
            raise RemoteFailure(FAILED, "destination exists")
    status, _ = fs.mv(source.path, dest.path, timeout=timeout())
    _check(status)


def mkdir(rp) -> None:
    """Create folder ``rp`` and its parents; an existing one is no error."""
    client = _client()
    status, _ = _fs(rp).mkdir(rp.path, client.flags.MkDirFlags.MAKEPATH, timeout=timeout())
    if not status.ok and status.errno != 3018:  # kXR_ItExists
        _check(status)


def remove(rp, *, quiet: bool = False) -> None:
    """Delete ``rp``; with ``quiet``, failures are ignored."""
    try:
        status, _ = _fs(rp).rm(rp.path, timeout=timeout())
        _check(status)
    except (RemoteFailure, Exception):
        if not quiet:
            raise
