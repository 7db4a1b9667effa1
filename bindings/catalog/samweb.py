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

Strategy: one ``_request`` does all I/O, through the shared ``http.HttpTransport``: retries
with exponential backoff for minutes (urllib3 ``Retry``), never a 4xx, never past the
catalogue's total deadline, every attempt counted in the budget.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import requests

from engine.errors import CatalogError, FileNotDeclared, UsageError
from engine.metadata import normalize_metadata

from .base import (
    Catalog,
    DeclareResult,
    chunks,
    parent_names,
    prepare_declaration,
)
from .http import (
    DEFAULT_BACKOFF,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRIES,
    HttpTransport,
    error_text,
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
            raise UsageError(
                f"{ENV_RETRIES}={environ[ENV_RETRIES]!r} is not a whole number"
            ) from None
    return settings


def _readable(path: str, variable: str) -> str:
    if not os.access(path, os.R_OK):
        raise UsageError(
            f"{variable}: cannot read {path} (no such file or no permission)", path=path
        )
    return path


def _read_token_file(path: str) -> str:
    try:
        token = open(path, encoding="utf-8").read().strip()
    except OSError as exc:
        raise UsageError(
            f"{ENV_TOKEN_FILE}: cannot read the token: {exc.strerror}", path=path
        ) from None
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
        raise UsageError(
            f"{ENV_TIMEOUT}={text!r}: want CONNECT,READ seconds (or one number for both)"
        )
    return values[0], values[1]


def base_from_url(url: str) -> str:
    """The HTTP(S) API base of a ``samweb+http(s)://`` or plain ``http(s)://`` SAM web URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES or not rest.strip("/"):
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
        deadline: float | None = None,
    ) -> None:
        super().__init__(url or f"samweb+{base_url}", deadline=deadline)
        if key and not cert:
            raise UsageError(f"{ENV_KEY} is set but {ENV_CERT} is not: a key needs its certificate")
        self.base = base_url.rstrip("/")
        self.http = HttpTransport(
            self.base,
            self.budget,
            name="samweb",
            url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            cert=((cert, key) if key else cert) if cert else None,
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff=backoff,
        )

    @classmethod
    def from_url(cls, url: str, **options) -> SamWebCatalog:
        settings = settings_from_environment()
        settings.update(options)
        return cls(base_from_url(url), url=url, **settings)

    def close(self) -> None:
        self.http.close()

    # --- transport ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, path, **kwargs)

    def _fail(self, response: requests.Response, file_name: str | None = None) -> CatalogError:
        """The error for an answer that is not the one asked for."""
        status = response.status_code
        if status == 404 and file_name is not None:
            return FileNotDeclared("not declared in the catalogue", path=file_name)
        if status in (401, 403):
            return CatalogError(
                f"samweb: HTTP {status} {error_text(response)} (credentials come from "
                f"{ENV_CERT}/{ENV_KEY}, {ENV_PROXY}, {ENV_TOKEN}, {ENV_BEARER_TOKEN} or "
                f"{ENV_TOKEN_FILE})",
                path=file_name,
            )
        return CatalogError(f"samweb: HTTP {status} {error_text(response)}", path=file_name)

    def _json(self, response: requests.Response, what: str):
        return self.http.json(response, what)

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
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file_name"), str) for e in entries
        ):
            raise CatalogError("samweb: POST /files/metadata: expected a JSON list of records")
        asked = set(names)
        return {
            e["file_name"]: normalize_metadata(e, strict=False)
            for e in entries
            if e["file_name"] in asked
        }

    def children(self, file_name: str) -> list[str]:
        return sorted(self._lineage(file_name, "children"))

    def parents(self, file_name: str) -> list[str]:
        return self._lineage(file_name, "parents")

    def _lineage(self, file_name: str, direction: str) -> list[str]:
        entries = self._get_json(
            f"{self._file_path(file_name)}/lineage/{direction}", file_name=file_name
        )
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
            raise CatalogError(
                "samweb: listing files needs a run or a data tier (SAM lists by dimensions)"
            )
        return self.list_dims(" and ".join(dims))

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        return self.declare_without_transactions(
            prepare_declaration(metadata), exclusive_tier, self._post
        )

    def _post(self, md: dict) -> int | None:
        response = self._request(
            "POST",
            "/files",
            data=json.dumps(md).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code == 409:
            return None
        if not 200 <= response.status_code < 300:
            raise self._fail(response)
        return _file_id(response, md["file_name"])

    def conflicts_after(self, metadata: dict, tier: str) -> list[str]:
        """One request: the files of ``tier`` sharing a parent with the file just declared."""
        name = metadata["file_name"]
        siblings = self.list_dims(
            f"data_tier {tier} and ischildof: (isparentof: ({file_name_dims([name])}))"
        )
        return sorted(set(siblings) - {name})


def file_name_dims(names: list[str]) -> str:
    """SAM dimensions selecting ``names``: ``file_name a, b, c``."""
    for name in names:
        if any(c in name for c in ",() \t\n'\""):
            raise CatalogError(
                f"samweb: cannot name {name!r} in SAM dimensions (it holds a separator)"
            )
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
    raise CatalogError(
        f"samweb: the declaration is not confirmed: POST /files answered HTTP "
        f"{response.status_code} ({what}) without a file id: {shown!r}",
        path=name,
    )


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
