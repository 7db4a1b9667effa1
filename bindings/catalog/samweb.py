"""A client of SAM's web API, used the way SAM's own ``samweb_client`` uses it.

URLs: ``samweb+https://HOST[:PORT]/sam/EXPERIMENT/api`` (``samweb+http://`` for tests and
trusted networks), or the plain ``https://HOST[:PORT]/sam/EXPERIMENT/api`` that samweb users
write.  The API base is the HTTP(S) URL; requests go to:

====================================================  ======================================
``POST {base}/files`` (JSON body)                     declare; the answer is the new file id
``GET {base}/files/name/NAME/metadata?format=json``   read a record
``POST {base}/files/metadata?format=json``            read many records: form field
                                                      ``file_name`` repeated (unknown names
                                                      are just absent from the answer)
``GET {base}/files/name/NAME/lineage/children``       children (and ``/lineage/parents``)
``GET {base}/files/list?dims=...&format=json``        names matching SAM dimensions, e.g.
                                                      ``ischildof: (file_name a, b)``
====================================================  ======================================

Errors are 4xx answers with JSON ``{"error": Type, "message": ...}``; a duplicate declaration
is 409 ``FileAlreadyExists``, after which the existing record is read and the idempotency rule
applied (so a declaration retried after a lost answer reports "already declared").  A
declaration is confirmed only by a file id in the answer (or that 409 and a matching record):
any other answer, even a 2xx (a proxy's or a login page's ``200 <html>``), is a
``CatalogError``, never taken for success.

Not merged twice (``exclusive_tier``): SAM has no transactions, so the check that no parent
has a merged child yet is made immediately before the POST, and the lineage is read again
after it; a merged sibling found then is reported (``AlreadyMerged``, exit 8), never hidden.

Authentication and transport come from the environment (see ``settings_from_environment``):
an X.509 client certificate and key or proxy, or a bearer token, a CA bundle, timeouts,
retries.

Strategy: one ``_request`` does all I/O through a ``requests`` session whose adapter retries
(urllib3 ``Retry``) connection failures, timeouts, dropped connections and 5xx answers with
exponential backoff (1, 2, 4 ... s up to 60 s between attempts; by default for minutes),
never a 4xx (an answer: retrying cannot change it), and never past the catalogue's total
deadline (``CatalogBudget``).  When retries or the deadline run out it raises
``CatalogUnavailable``.  Every attempt counts in the budget.
"""

from __future__ import annotations

import json
import os
import re
import time
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from engine import __version__
from engine.errors import CatalogError, CatalogUnavailable, FileNotDeclared, UsageError
from engine.metadata import normalize_metadata

from .base import (
    ALREADY_DECLARED,
    DECLARED,
    Catalog,
    CatalogBudget,
    DeclareResult,
    already_merged_error,
    check_redeclaration,
    chunks,
    parent_names,
    prepare_declaration,
    unknown_parent_error,
)

ENV_CERT = "TMBMERGE_SAMWEB_CERT"
ENV_KEY = "TMBMERGE_SAMWEB_KEY"
ENV_PROXY = "X509_USER_PROXY"
ENV_USER_CERT = "X509_USER_CERT"
ENV_USER_KEY = "X509_USER_KEY"
ENV_TOKEN = "TMBMERGE_SAMWEB_TOKEN"
ENV_BEARER_TOKEN = "BEARER_TOKEN"
ENV_TOKEN_FILE = "BEARER_TOKEN_FILE"
ENV_CA = "TMBMERGE_SAMWEB_CA"
ENV_CERT_DIR = "X509_CERT_DIR"
ENV_TIMEOUT = "TMBMERGE_SAMWEB_TIMEOUT"
ENV_RETRIES = "TMBMERGE_SAMWEB_RETRIES"

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_RETRIES = 10    # with the backoff below: about 5 minutes of trying before giving up
DEFAULT_BACKOFF = 1.0   # seconds before the 2nd retry, doubling each time
MAX_BACKOFF = 60.0
SCHEMES = ("samweb+https", "samweb+http", "https", "http")


def settings_from_environment(environ=os.environ) -> dict:
    """Keyword arguments of ``SamWebCatalog`` taken from environment variables.

    The certificate: ``TMBMERGE_SAMWEB_CERT`` (and ``TMBMERGE_SAMWEB_KEY``), else the grid
    proxy ``X509_USER_PROXY`` (certificate and key in one file), else ``X509_USER_CERT`` and
    ``X509_USER_KEY``.  The token: ``TMBMERGE_SAMWEB_TOKEN``, else ``BEARER_TOKEN``, else the
    file ``BEARER_TOKEN_FILE`` (the WLCG token discovery order).  The CA:
    ``TMBMERGE_SAMWEB_CA`` (bundle file or hashed directory), else ``X509_CERT_DIR``, else
    the bundle requests ships.  ``TMBMERGE_SAMWEB_TIMEOUT`` (``CONNECT,READ`` or one number
    of seconds per request); ``TMBMERGE_SAMWEB_RETRIES`` (retries after the first attempt).
    """
    settings: dict = {}
    if environ.get(ENV_CERT):
        settings["cert"] = environ[ENV_CERT]
        if environ.get(ENV_KEY):
            settings["key"] = environ[ENV_KEY]
    elif environ.get(ENV_KEY):
        settings["key"] = environ[ENV_KEY]
    elif environ.get(ENV_PROXY):
        settings["cert"] = _readable(environ[ENV_PROXY], ENV_PROXY)
    elif environ.get(ENV_USER_CERT):
        settings["cert"] = _readable(environ[ENV_USER_CERT], ENV_USER_CERT)
        if environ.get(ENV_USER_KEY):
            settings["key"] = _readable(environ[ENV_USER_KEY], ENV_USER_KEY)
    if environ.get(ENV_TOKEN):
        settings["token"] = environ[ENV_TOKEN].strip()
    elif environ.get(ENV_BEARER_TOKEN):
        settings["token"] = environ[ENV_BEARER_TOKEN].strip()
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


def _readable(path: str, variable: str) -> str:
    if not os.access(path, os.R_OK):
        raise UsageError(f"{variable}: cannot read {path} (no such file or no permission)", path=path)
    return path


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
    """The HTTP(S) API base of a ``samweb+http(s)://`` or plain ``http(s)://`` SAM web URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES or not rest.strip("/"):
        raise UsageError(f"{url!r} is not a SAM web URL (samweb+https://HOST/sam/EXPERIMENT/api)")
    return f"{scheme.lower().removeprefix('samweb+')}://{rest.rstrip('/')}"


class _BudgetedRetry(Retry):
    """urllib3's ``Retry``, counting every attempt in a ``CatalogBudget`` and stopping at its deadline."""

    budget: CatalogBudget | None = None

    def new(self, **kw) -> "_BudgetedRetry":
        retry = super().new(**kw)
        retry.budget = self.budget
        return retry

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        return backoff if self.budget is None else max(0.0, min(backoff, self.budget.remaining()))

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if self.budget is not None:
            self.budget.spend(0.0)          # the attempt that just failed; its time is counted by _request
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.budget is not None and self.budget.remaining() <= 0:
            raise MaxRetryError(_pool, url, error or ResponseError("the catalogue deadline is spent"))
        return retry


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
        deadline: float | None = None,
    ) -> None:
        super().__init__(url or f"samweb+{base_url}", deadline=deadline)
        if key and not cert:
            raise UsageError(f"{ENV_KEY} is set but {ENV_CERT} is not: a key needs its certificate")
        if retries < 0:
            raise UsageError(f"retries must be 0 or more, not {retries}")
        self.base = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        retry = _BudgetedRetry(
            total=retries, connect=retries, read=retries, status=retries, redirect=0,
            other=0,                # TLS failures: configuration, not weather
            allowed_methods=None,   # POST too: a repeated declaration is answered 409 and compared
            status_forcelist=range(500, 600), backoff_factor=backoff, backoff_max=MAX_BACKOFF,
            raise_on_status=False, respect_retry_after_header=True,
        )
        retry.budget = self.budget
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
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
        """One API call, retried (see the module docstring); returns any answer but a 5xx."""
        left = self.budget.check(self.url)
        timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
        started = time.monotonic()
        before = self.budget.requests
        try:
            response = self._session.request(
                method, self.base + path, timeout=timeout, verify=self._verify, cert=self._cert,
                allow_redirects=False, **kwargs,
            )
        except requests.exceptions.SSLError as exc:  # configuration, not weather: do not retry
            raise CatalogError(f"samweb: TLS failure talking to {self.base}: {_reason(exc)}") from None
        except requests.RequestException as exc:
            failure = f"{type(exc).__name__}: {_reason(exc)}"
            response = None
        finally:
            self.budget.spend(time.monotonic() - started, requests=0)
        attempts = self.budget.requests - before
        if response is not None and response.status_code < 500:
            self.budget.spend(0.0)            # the attempt that answered
            return response
        if response is not None:
            failure = f"HTTP {response.status_code} {_error_text(response)}"
        attempts = max(attempts, 1)
        spent = " (the catalogue deadline is spent)" if self.budget.remaining() <= 0 else ""
        raise CatalogUnavailable(f"samweb {method} {path.split('?')[0]} failed {attempts} times{spent}, "
                                 f"last: {failure}")

    def _fail(self, response: requests.Response, file_name: str | None = None) -> CatalogError:
        """The error for an answer that is not the one asked for."""
        status = response.status_code
        if status == 404 and file_name is not None:
            return FileNotDeclared("not declared in the catalogue", path=file_name)
        if status in (401, 403):
            return CatalogError(
                f"samweb: HTTP {status} {_error_text(response)} (credentials come from {ENV_CERT}/{ENV_KEY}, "
                f"{ENV_PROXY}, {ENV_TOKEN}, {ENV_BEARER_TOKEN} or {ENV_TOKEN_FILE})",
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

    def fetch_records(self, names: list[str]) -> dict[str, dict]:
        if not names:
            return {}
        response = self._request("POST", "/files/metadata?format=json", data={"file_name": names})
        if response.status_code != 200:
            raise self._fail(response)
        entries = self._json(response, "POST /files/metadata")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("file_name"), str)
                                                    for e in entries):
            raise CatalogError("samweb: POST /files/metadata: expected a JSON list of records")
        asked = set(names)
        return {e["file_name"]: normalize_metadata(e, strict=False) for e in entries if e["file_name"] in asked}

    def children(self, file_name: str) -> list[str]:
        return sorted(self._lineage(file_name, "children"))

    def parents(self, file_name: str) -> list[str]:
        return self._lineage(file_name, "parents")

    def _lineage(self, file_name: str, direction: str) -> list[str]:
        entries = self._get_json(f"{self._file_path(file_name)}/lineage/{direction}", file_name=file_name)
        return _names(entries, f"{direction} of {file_name}")

    def children_of(self, names, *, data_tier: str | None = None) -> dict[str, list[str]]:
        """Children of many files: one ``ischildof:`` query per batch, then the children's records
        (their parents say whose child each is); no record is needed when none is found."""
        names = list(dict.fromkeys(names))
        out: dict[str, list[str]] = {name: [] for name in names}
        for batch in chunks(names):
            dims = f"ischildof: ({file_name_dims(batch)})"
            if data_tier is not None:
                dims = f"data_tier {data_tier} and {dims}"
            children = self.list_dims(dims)
            records = self.records(children)
            for child in children:
                if child not in records:
                    raise CatalogError(f"samweb: {child} is listed as a child but has no record")
                for parent in parent_names(records[child]):
                    if parent in out and child not in out[parent]:
                        out[parent].append(child)
        return {name: sorted(children) for name, children in out.items()}

    def list_dims(self, dims: str) -> list[str]:
        return sorted(_names(self._get_json("/files/list", params={"dims": dims}), "file list"))

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        dims = []
        if run is not None:
            dims.append(f"run_number {int(run)}")
        if data_tier is not None:
            dims.append(f"data_tier {data_tier}")
        if not dims:
            raise CatalogError("samweb: listing files needs a run or a data tier (SAM lists by dimensions)")
        return self.list_dims(" and ".join(dims))

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        md = prepare_declaration(metadata)
        name = md["file_name"]
        parents = parent_names(md)
        known = self.records(parents)
        missing = [parent for parent in parents if parent not in known]
        if missing:
            raise unknown_parent_error(name, missing)
        if exclusive_tier is not None and parents:
            others = self._merged_siblings(md, exclusive_tier)   # immediately before the POST
            if others:
                raise already_merged_error(name, others)
        response = self._request(
            "POST", "/files", data=json.dumps(md).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        if response.status_code == 409:
            existing = self.get(name)
            check_redeclaration(existing, md)
            result = DeclareResult(name, ALREADY_DECLARED, existing.get("file_id"))
        elif 200 <= response.status_code < 300:
            result = DeclareResult(name, DECLARED, _file_id(response, name))
        else:
            raise self._fail(response)
        self.forget(name)
        if exclusive_tier is not None and parents:
            others = self._merged_siblings(md, exclusive_tier)   # and the lineage read after it
            if others:
                raise already_merged_error(name, others, after=True)
        return result

    def _merged_siblings(self, md: dict, tier: str) -> list[str]:
        name = md["file_name"]
        siblings: set[str] = set()
        for batch in chunks(parent_names(md)):
            siblings.update(self.list_dims(f"data_tier {tier} and ischildof: ({file_name_dims(batch)})"))
        siblings.discard(name)
        return sorted(siblings)


def file_name_dims(names: list[str]) -> str:
    """SAM dimensions selecting ``names``: ``file_name a, b, c``."""
    for name in names:
        if any(c in name for c in ",() \t\n'\""):
            raise CatalogError(f"samweb: cannot name {name!r} in SAM dimensions (it holds a separator)")
    return "file_name " + ", ".join(names)


def _file_id(response: requests.Response, name: str) -> int:
    """The file id a declaration answered, or a ``CatalogError``: nothing else confirms it."""
    text = response.text.strip()
    if text.isdigit():
        return int(text)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        body = body.get("file_id")
    if isinstance(body, int) and not isinstance(body, bool):
        return body
    what = response.headers.get("Content-Type", "no content type").split(";")[0]
    shown = " ".join(text.split())[:60]
    raise CatalogError(f"samweb: the declaration is not confirmed: POST /files answered HTTP "
                       f"{response.status_code} ({what}) without a file id: {shown!r}", path=name)

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
    """The error inside requests' and urllib3's wrappers (``MaxRetryError.reason``, ``args[0]``):
    ``NewConnectionError``, ``ReadTimeoutError``, ``NameResolutionError`` ..."""
    while isinstance(exc, (requests.RequestException, MaxRetryError)):
        inner = exc.reason if isinstance(exc, MaxRetryError) else (
            exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _reason(exc: Exception, limit: int = 200) -> str:
    """A requests exception on one line: the error inside the wrappers, without urllib3's object
    reprs, cut at a word (never mid-word) when longer than ``limit``."""
    inner = _innermost(exc)
    text = " ".join(str(inner).split())
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>:? ?", "", text).strip(" :") or type(inner).__name__
    if inner is not exc:
        text = f"{type(inner).__name__}: {text}"
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text
