"""``https://`` (and ``davs://``): files on a WebDAV storage endpoint (dCache, EOS, XRootD's
HTTP plugin, StoRM), through ``requests``.

``requests`` is already a dependency (the SAM web client) and does what is needed: client
certificates (the X.509 proxy), a CA folder (``X509_CERT_DIR``), connection pooling across
the prefetch threads, streamed uploads, timeouts.  The WebDAV steps are plain HTTP methods:
``GET`` with ``Range`` to read, ``PROPFIND`` (depth 1) to list a folder, ``PUT`` to upload,
``MOVE`` with ``Overwrite: F`` to rename, ``DELETE``, and the checksum through RFC 3230
``Want-Digest: adler32`` on a ``HEAD``, which the grid's storage systems answer.
"""

from __future__ import annotations

import os
import re
import stat as statmod
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime

from . import credentials
from .retry import DENIED, FAILED, MISSING, TRANSIENT, RemoteFailure, retrying, timeout

_sessions_lock = threading.Lock()
_sessions: dict = {}


def _session():
    """One session per process, shared by threads (connection pool sized for the prefetch)."""
    import requests

    with _sessions_lock:
        key = os.getpid()
        session = _sessions.get(key)
        if session is None:
            from .prefetch import streams

            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=streams() + 4, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            _sessions[key] = session
        return session


def _http_url(rp) -> str:
    scheme = {"davs": "https", "dav": "http"}.get(rp.scheme, rp.scheme)
    return f"{scheme}://{rp.netloc}{urllib.parse.quote(rp.path)}"


def _request(method: str, rp, *, headers=None, ok=(200,), **kwargs):
    import requests

    headers = dict(headers or {})
    token = credentials.bearer_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    proxy = credentials.x509_proxy()
    try:
        response = _session().request(
            method,
            _http_url(rp),
            headers=headers,
            timeout=timeout(),
            verify=credentials.ca_location(),
            cert=proxy,
            allow_redirects=True,
            **kwargs,
        )
    except requests.exceptions.SSLError as exc:
        found = re.search(r"\[SSL: [A-Z_]+\] ([^(]+?) \(_ssl", str(exc))
        reason = found.group(1) if found else _reason(exc)
        if "certificate" not in reason:  # the connection broke under TLS: worth another try
            raise RemoteFailure(TRANSIENT, f"TLS connection lost: {reason}") from None
        raise RemoteFailure(
            FAILED, f"TLS failure: {reason} (is the server's CA in X509_CERT_DIR?)"
        ) from None
    except (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        raise RemoteFailure(TRANSIENT, _reason(exc)) from None
    except requests.exceptions.RequestException as exc:
        raise RemoteFailure(FAILED, _reason(exc)) from None
    if response.status_code in ok:
        return response
    status = response.status_code
    text = f"HTTP {status} {response.reason}".strip()
    response.close()
    if status == 404:
        raise RemoteFailure(MISSING, "no such file" + f" ({text})")
    if status in (401, 403):
        raise RemoteFailure(DENIED, f"permission denied ({text})")
    if status in (408, 429) or status >= 500:
        raise RemoteFailure(TRANSIENT, text)
    raise RemoteFailure(FAILED, text)


def _reason(exc) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text.splitlines()[0][:300]


# -- reading -----------------------------------------------------------------------------------


class HttpsReader:
    """An open ``https://`` file: range reads with ``GET``."""

    def __init__(self, rp):
        self.rp = rp
        info = stat(rp)
        if statmod.S_ISDIR(info.st_mode):
            from ..errors import InputError

            raise InputError("is a directory, not a file", path=rp.url)
        self.size = info.st_size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        if length <= 0 or offset >= self.size:
            return b""
        end = min(offset + length, self.size) - 1

        def step():
            response = _request(
                "GET", self.rp, headers={"Range": f"bytes={offset}-{end}"}, ok=(206, 200)
            )
            try:
                if response.status_code == 200:  # the server ignored the range: take the slice
                    data = response.content[offset : end + 1]
                else:
                    data = response.content
            except Exception as exc:  # the connection dropped while the body came
                raise RemoteFailure(TRANSIENT, _reason(exc)) from None
            if len(data) != end + 1 - offset:
                raise RemoteFailure(
                    TRANSIENT, f"short read ({len(data)} of {end + 1 - offset} bytes)"
                )
            return data

        return retrying(step, self.rp, f"read error at offset {offset}")

    def read_many(self, ranges) -> list[bytes]:
        """Each (offset, length) range, one request each."""
        return [self.read(offset, length) for offset, length in ranges]

    def current_size(self) -> int:
        """The file's size on the server now."""
        return stat(self.rp).st_size

    def close(self) -> None:
        """Nothing to close: connections belong to the session."""
        pass


def open_reader(rp) -> HttpsReader:
    """Open ``rp`` for reading."""
    return HttpsReader(rp)


# -- the namespace -----------------------------------------------------------------------------

_DAV = "{DAV:}"


def _propfind(rp, depth: int):
    response = _request("PROPFIND", rp, headers={"Depth": str(depth)}, ok=(207,))
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError as exc:
        raise RemoteFailure(FAILED, f"unreadable PROPFIND answer ({exc})") from None
    entries = []
    for item in root.iter(f"{_DAV}response"):
        href = urllib.parse.unquote(item.findtext(f"{_DAV}href") or "")
        prop = item.find(f".//{_DAV}prop")
        if prop is None:
            continue
        is_dir = (
            prop.find(f"{_DAV}resourcetype/{_DAV}collection") is not None
            or (prop.findtext(f"{_DAV}iscollection") or "").strip() == "1"
        )
        size = int((prop.findtext(f"{_DAV}getcontentlength") or "0").strip() or 0)
        modified = prop.findtext(f"{_DAV}getlastmodified")
        mtime = parsedate_to_datetime(modified).timestamp() if modified else 0
        entries.append((urllib.parse.urlsplit(href).path, is_dir, size, mtime))
    return entries


def stat(rp):
    """``os.stat_result``-like facts of ``rp`` (``PROPFIND``, depth 0)."""
    entries = retrying(lambda: _propfind(rp, 0), rp, "cannot stat")
    if not entries:
        from ..errors import InputError

        raise InputError("the server described nothing at this address", path=rp.url)
    _, is_dir, size, mtime = entries[0]
    kind = statmod.S_IFDIR if is_dir else statmod.S_IFREG
    return os.stat_result((kind | 0o644, 0, 0, 1, 0, 0, size, 0, int(mtime), 0))


def listdir(rp) -> list:
    """The entries of folder ``rp`` (``PROPFIND``, depth 1)."""
    entries = retrying(lambda: _propfind(rp, 1), rp, "cannot list folder")
    own = rp.path.rstrip("/")
    names = [href.rstrip("/").rsplit("/", 1)[-1] for href, *_ in entries if href.rstrip("/") != own]
    return sorted(rp / name for name in names if name)


def read_whole(rp) -> bytes:
    """The whole file (one ``GET``)."""

    def step():
        response = _request("GET", rp)
        try:
            return response.content
        except Exception as exc:
            raise RemoteFailure(TRANSIENT, _reason(exc)) from None

    return retrying(step, rp, "cannot read")


def checksum(rp, *, output: bool = True) -> int:
    """The server's adler32 of the file (``Want-Digest: adler32``, RFC 3230)."""
    response = retrying(
        lambda: _request("HEAD", rp, headers={"Want-Digest": "adler32"}),
        rp,
        "checksum query failed",
        output=output,
    )
    for part in response.headers.get("Digest", "").split(","):
        algorithm, _, value = part.strip().partition("=")
        if algorithm.lower() == "adler32" and value:
            return int(value, 16)
    from ..errors import OutputError

    raise OutputError(
        "the server gave no adler32 digest (Want-Digest: adler32 unanswered)", path=rp.url
    )


# -- writing -----------------------------------------------------------------------------------


def upload(local_path, rp) -> None:
    """PUT ``local_path`` at ``rp`` (streamed from disk); a failure removes what arrived."""
    try:
        with open(local_path, "rb") as body:
            _request(
                "PUT",
                rp,
                data=body,
                ok=(200, 201, 204),
                headers={"Content-Length": str(os.fstat(body.fileno()).st_size)},
            )
    except BaseException:
        remove(rp, quiet=True)
        raise


def rename(source, dest, *, overwrite: bool = False) -> None:
    """Move ``source`` to ``dest`` (``MOVE``), refusing to replace it unless ``overwrite``."""
    if not overwrite:
        try:
            _request("HEAD", dest)
        except RemoteFailure as failure:
            if failure.kind != MISSING:
                raise
        else:
            raise RemoteFailure(FAILED, "destination exists")
    _request(
        "MOVE",
        source,
        ok=(200, 201, 204),
        headers={"Destination": _http_url(dest), "Overwrite": "T" if overwrite else "F"},
    )


def mkdir(rp) -> None:
    """Create folder ``rp`` (``MKCOL``); an existing one is no error."""
    _request("MKCOL", rp, ok=(201, 405))  # 405: it exists already


def remove(rp, *, quiet: bool = False) -> None:
    """Delete ``rp``; with ``quiet``, failures are ignored."""
    try:
        _request("DELETE", rp, ok=(200, 204))
    except RemoteFailure:
        if not quiet:
            raise
