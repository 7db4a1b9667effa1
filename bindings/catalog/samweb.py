"""A client of SAM's web API, used the way SAM's own ``samweb_client`` uses it.

URLs: ``samweb+https://HOST[:PORT]/sam/EXPERIMENT/api`` (``samweb+http://`` for tests and
trusted networks).  The part after ``samweb+`` is the API base; requests go to:

====================================================  ======================================
``POST {base}/files`` (JSON body)                     declare; the answer is the new file id
``GET {base}/files/name/NAME/metadata?format=json``   read a record
``GET {base}/files/name/NAME/lineage/children``       children (and ``/lineage/parents``)
``GET {base}/files/list?dims=...&format=json``        names matching SAM dimensions
====================================================  ======================================

Errors are 4xx answers with JSON ``{"error": Type, "message": ...}``; a duplicate declaration
is 409 ``FileAlreadyExists``, after which the existing record is read and the idempotency rule
applied (so a declaration retried after a lost answer reports "already declared").

Authentication and transport come from the environment (see ``settings_from_environment``):
an X.509 client certificate and key, or a bearer token, a CA bundle, timeouts, retries.

Strategy: one ``_request`` does all I/O.  It retries, with exponential backoff, connection
failures, timeouts and 5xx answers, and never a 4xx (a 4xx is an answer: retrying cannot
change it).  When retries run out it raises ``CatalogUnavailable``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from urllib.parse import quote

import requests

from engine import __version__
from engine.errors import CatalogError, CatalogUnavailable, FileNotDeclared, UsageError
from engine.metadata import normalize_metadata

from .base import (
    ALREADY_DECLARED,
    DECLARED,
    Catalog,
    DeclareResult,
    check_redeclaration,
    parent_names,
    prepare_declaration,
    unknown_parent_error,
)

ENV_CERT = "TMBMERGE_SAMWEB_CERT"
ENV_KEY = "TMBMERGE_SAMWEB_KEY"
ENV_TOKEN = "TMBMERGE_SAMWEB_TOKEN"
ENV_TOKEN_FILE = "BEARER_TOKEN_FILE"
ENV_CA = "TMBMERGE_SAMWEB_CA"
ENV_CERT_DIR = "X509_CERT_DIR"
ENV_TIMEOUT = "TMBMERGE_SAMWEB_TIMEOUT"
ENV_RETRIES = "TMBMERGE_SAMWEB_RETRIES"

# One hung request costs at most (retries + 1) x read timeout + the backoffs: 3 x 20 + 1 + 2 =
# 63 s (it was 4 x 60 + 7 = 247 s); a host that refuses connections fails in about 3 s, a name
# that does not resolve at once (no retry: that is configuration, not weather).
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 20.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 30.0


def settings_from_environment(environ=os.environ) -> dict:
    """Keyword arguments of ``SamWebCatalog`` taken from environment variables.

    ``TMBMERGE_SAMWEB_CERT`` (PEM certificate, or proxy holding its key too) and
    ``TMBMERGE_SAMWEB_KEY``; ``TMBMERGE_SAMWEB_TOKEN``, else the file ``BEARER_TOKEN_FILE``;
    ``TMBMERGE_SAMWEB_CA`` (bundle file or hashed directory), else ``X509_CERT_DIR``, else the
    bundle requests ships; ``TMBMERGE_SAMWEB_TIMEOUT`` (``CONNECT,READ`` or one number of
    seconds); ``TMBMERGE_SAMWEB_RETRIES`` (retries after the first attempt).
    """
    settings: dict = {}
    if environ.get(ENV_CERT):
        settings["cert"] = environ[ENV_CERT]
    if environ.get(ENV_KEY):
        settings["key"] = environ[ENV_KEY]
    if environ.get(ENV_TOKEN):
        settings["token"] = environ[ENV_TOKEN].strip()
    elif environ.get(ENV_TOKEN_FILE):
        settings["token"] = _read_token_file(environ[ENV_TOKEN_FILE])
    if environ.get(ENV_CA):
        settings["verify"] = environ[ENV_CA]
    elif environ.get(ENV_CERT_DIR):
        settings["verify"] = environ[ENV_CERT_DIR]
    if environ.get(ENV_TIMEOUT):
        settings["connect_timeout"], settings["read_timeout"] = _parse_timeout(environ[ENV_TIMEOUT])
    if environ.get(ENV_RETRIES):
        try:
            settings["retries"] = int(environ[ENV_RETRIES])
        except ValueError:
            raise UsageError(f"{ENV_RETRIES}={environ[ENV_RETRIES]!r} is not a whole number") from None
    return settings


def _read_token_file(path: str) -> str:
    try:
        token = open(path, encoding="utf-8").read().strip()
    except OSError as exc:
        raise UsageError(f"{ENV_TOKEN_FILE}: cannot read the token: {exc.strerror}", path=path) from None
    if not token:
        raise UsageError(f"{ENV_TOKEN_FILE}: the token file is empty", path=path)
    return token


def _parse_timeout(text: str) -> tuple[float, float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise UsageError(f"{ENV_TIMEOUT}={text!r}: want CONNECT,READ seconds (or one number for both)")
    return values[0], values[1]


def base_from_url(url: str) -> str:
    """The HTTP(S) API base of a ``samweb+http(s)://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("samweb+https", "samweb+http") or not rest.strip("/"):
        raise UsageError(f"{url!r} is not a SAM web URL (samweb+https://HOST/sam/EXPERIMENT/api)")
    return f"{scheme.lower().removeprefix('samweb+')}://{rest.rstrip('/')}"


class SamWebCatalog(Catalog):
    """The catalogue behind a SAM web server (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        url: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token: str | None = None,
        verify: bool | str = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(url or f"samweb+{base_url}")
        if key and not cert:
            raise UsageError(f"{ENV_KEY} is set but {ENV_CERT} is not: a key needs its certificate")
        if retries < 0:
            raise UsageError(f"retries must be 0 or more, not {retries}")
        self.base = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"tmbmerge/{__version__}"
        self._session.headers["Accept"] = "application/json"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        # Given with every request, not as session attributes: requests lets REQUESTS_CA_BUNDLE
        # override a session's verify, and a CA configured for tmbmerge must win.
        self._cert = ((cert, key) if key else cert) if cert else None
        self._verify = verify

    @classmethod
    def from_url(cls, url: str, **options) -> "SamWebCatalog":
        settings = settings_from_environment()
        settings.update(options)
        return cls(base_from_url(url), url=url, **settings)

    def close(self) -> None:
        self._session.close()

    # --- transport ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One API call, retried on connection errors, timeouts and 5xx; returns any other answer."""
        url = self.base + path
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            try:
                response = self._session.request(
                    method, url, timeout=self.timeout, verify=self._verify, cert=self._cert, **kwargs
                )
            except requests.exceptions.SSLError as exc:  # configuration, not weather: do not retry
                raise CatalogError(f"samweb: TLS failure talking to {self.base}: {_reason(exc)}") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = f"{type(exc).__name__}: {_reason(exc)}"
                if _unresolvable(exc):
                    raise CatalogUnavailable(f"samweb {method} {path}: cannot reach {self.base}: {_reason(exc)}") \
                        from None
                continue
            if response.status_code < 500:
                return response
            failure = f"HTTP {response.status_code} {_error_text(response)}"
        raise CatalogUnavailable(f"samweb {method} {path} failed {self.retries + 1} times, last: {failure}")

    def _fail(self, response: requests.Response, file_name: str | None = None) -> CatalogError:
        """The error for a 4xx answer."""
        status = response.status_code
        if status == 404 and file_name is not None:
            return FileNotDeclared("not declared in the catalogue", path=file_name)
        if status in (401, 403):
            return CatalogError(
                f"samweb: HTTP {status} {_error_text(response)} (credentials come from {ENV_CERT}/{ENV_KEY}, "
                f"{ENV_TOKEN} or {ENV_TOKEN_FILE})",
                path=file_name,
            )
        return CatalogError(f"samweb: HTTP {status} {_error_text(response)}", path=file_name)

    def _json(self, response: requests.Response, what: str):
        try:
            return response.json()
        except ValueError:
            raise CatalogError(f"samweb: {what}: the answer is not JSON: {response.text[:80]!r}") from None

    def _get_json(self, path: str, *, file_name: str | None = None, params: dict | None = None):
        query = {"format": "json", **(params or {})}
        response = self._request("GET", path, params=query)
        if response.status_code != 200:
            raise self._fail(response, file_name)
        return self._json(response, f"GET {path}")

    # --- the catalogue ------------------------------------------------------------------

    def _file_path(self, file_name: str) -> str:
        return f"/files/name/{quote(file_name, safe='')}"

    def get(self, file_name: str) -> dict:
        record = self._get_json(self._file_path(file_name) + "/metadata", file_name=file_name)
        if not isinstance(record, dict):
            raise CatalogError(f"samweb: the record of {file_name} is not a JSON object")
        return normalize_metadata(record, strict=False)

    def children(self, file_name: str) -> list[str]:
        return sorted(self._lineage(file_name, "children"))

    def parents(self, file_name: str) -> list[str]:
        return self._lineage(file_name, "parents")

    def _lineage(self, file_name: str, direction: str) -> list[str]:
        entries = self._get_json(f"{self._file_path(file_name)}/lineage/{direction}", file_name=file_name)
        return _names(entries, f"{direction} of {file_name}")

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        dims = []
        if run is not None:
            dims.append(f"run_number {int(run)}")
        if data_tier is not None:
            dims.append(f"data_tier {data_tier}")
        if not dims:
            raise CatalogError("samweb: listing files needs a run or a data tier (SAM lists by dimensions)")
        entries = self._get_json("/files/list", params={"dims": " and ".join(dims)})
        return sorted(_names(entries, "file list"))

    def declare(self, metadata: dict) -> DeclareResult:
        md = prepare_declaration(metadata)
        name = md["file_name"]
        missing = [parent for parent in parent_names(md) if not self.exists(parent)]
        if missing:
            raise unknown_parent_error(name, missing)
        response = self._request(
            "POST", "/files", data=json.dumps(md).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        if response.status_code == 409:
            existing = self.get(name)
            check_redeclaration(existing, md)
            return DeclareResult(name, ALREADY_DECLARED, existing.get("file_id"))
        if not 200 <= response.status_code < 300:
            raise self._fail(response)
        text = response.text.strip()
        return DeclareResult(name, DECLARED, int(text) if text.isdigit() else None)


def _names(entries, what: str) -> list[str]:
    """File names from a SAM list answer: names, or objects with a ``file_name``."""
    if not isinstance(entries, list):
        raise CatalogError(f"samweb: {what}: expected a JSON list")
    names = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("file_name"), str):
            names.append(entry["file_name"])
        elif isinstance(entry, str):
            names.append(entry)
        else:
            raise CatalogError(f"samweb: {what}: unexpected entry {entry!r}")
    return names


def _error_text(response: requests.Response) -> str:
    """``Type: message`` from SAM's JSON error body, or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        message = body.get("message")
        return f"{body['error']}: {message}" if message else str(body["error"])
    text = " ".join(response.text.split())
    return text[:120] or response.reason or ""


def _innermost(exc: BaseException) -> BaseException:
    """The root cause inside requests' and urllib3's wrappers (``reason``, ``args[0]``, ``__cause__``)."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _unresolvable(exc: BaseException) -> bool:
    """A host name that does not resolve: retrying cannot help."""
    inner = _innermost(exc)
    return isinstance(inner, socket.gaierror) or "NameResolutionError" in type(inner).__name__


def _reason(exc: Exception, limit: int = 200) -> str:
    """A requests exception on one line: its root cause, without urllib3's object reprs, cut at a
    word (never mid-word) when longer than ``limit``."""
    text = " ".join(str(_innermost(exc)).split())
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>:? ?", "", text).strip(" :") or type(exc).__name__
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text
