"""A client of MetaCat's web API (the file catalogue DUNE and others use after SAM).

URLs: ``metacat+https://HOST[:PORT]/PATH?namespace=NS&dataset=NS:NAME`` (``metacat+http``
for tests and trusted networks): ``https://HOST[:PORT]/PATH`` is the server URL MetaCat's own
client is given (``METACAT_SERVER_URL``), ``namespace`` the files' namespace, ``dataset`` the
dataset each declared file is added to (MetaCat declares files into a dataset; look-ups work
without it).

The calls are those of MetaCat's client, ``metacat.webapi.MetaCatClient`` (package
``metacat-client``, 4.1.5), made over the shared transport (``http.HttpTransport``) rather
than through that client: its retry loop is its own (503-like answers only, for up to 30
minutes, no retry of a dropped connection) and could not be bounded by the catalogue
deadline nor counted in the request budget.

=============================================================  ===============================
``POST {server}/data/declare_files?dataset=DS`` (JSON list)     declare; answer ``[{"fid"...}]``
``GET {server}/data/file?namespace=NS&name=N&with_...=yes``     one record (404: none)
``POST {server}/data/files?with_metadata=yes&...`` (JSON list)  many records, by name or fid
``POST {server}/data/query?with_meta=yes&namespace=NS`` (MQL)   files of a run and/or tier
=============================================================  ===============================

Records: a file is ``{"namespace", "name", "fid", "size", "checksums": {"adler32": hex},
"metadata": {...}, "parents": [...], "children": [...]}``.  SAM's fields travel in the
metadata as ``core.<field>`` (``core.application.family`` ...; runs as ``core.runs`` (run
numbers), ``core.runs_subruns`` (run x 100000 + subrun) and ``core.run_type``, DUNE's
convention); free-form ``Category.name`` parameters as they are.  ``file_id`` is the fid
when it is a number (else it is kept as the parameter ``MetaCat.fid``).

Rules as for every backend (``base``): idempotent declarations (a 409 is compared with the
record, not accepted blindly), parents first, a declaration confirmed only by a fid in the
answer, and ``exclusive_tier`` checked just before and just after the declaration (MetaCat
has no transactions, like SAM web).
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs, urlsplit

import requests

from engine.errors import CatalogError, FileNotDeclared, UsageError
from engine.metadata import normalize_metadata

from .base import (
    Catalog,
    DeclareResult,
    chunks,
    is_placeholder,
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

ENV_TOKEN = "TMBMERGE_METACAT_TOKEN"
ENV_TOKEN_FILE = "TMBMERGE_METACAT_TOKEN_FILE"
ENV_CA = "TMBMERGE_METACAT_CA"
SCHEMES = ("metacat+https", "metacat+http")

#: SAM fields kept in MetaCat metadata as ``core.<field>``.
CORE_FIELDS = (
    "file_type",
    "file_format",
    "data_tier",
    "data_stream",
    "content_status",
    "group",
    "user",
    "event_count",
    "first_event",
    "last_event",
    "start_time",
    "end_time",
)
SUBRUNS = 100000


def parse_url(url: str) -> tuple[str, str, str | None]:
    """(server URL, namespace, dataset or None) of a ``metacat+http(s)://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES or not rest.split("?")[0].strip("/"):
        raise UsageError(
            f"{url!r} is not a MetaCat URL (metacat+https://HOST/PATH?namespace=NS&dataset=NS:NAME)"
        )
    parts = urlsplit(f"{scheme.lower().removeprefix('metacat+')}://{rest}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - {"namespace", "dataset"})
    if unknown or not query.get("namespace"):
        raise UsageError(
            f"{url!r}: a MetaCat URL needs ?namespace=NS (and dataset=NS:NAME to declare)"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    dataset = query.get("dataset")
    if dataset is not None and ":" not in dataset:
        dataset = f"{query['namespace']}:{dataset}"
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", query["namespace"], dataset


def settings_from_environment(environ=os.environ) -> dict:
    """``TMBMERGE_METACAT_TOKEN`` (else the file ``TMBMERGE_METACAT_TOKEN_FILE``), sent as MetaCat's
    ``X-Authentication-Token``; ``TMBMERGE_METACAT_CA`` (else ``X509_CERT_DIR``) to verify the
    server."""
    settings: dict = {}
    if environ.get(ENV_TOKEN):
        settings["token"] = environ[ENV_TOKEN].strip()
    elif environ.get(ENV_TOKEN_FILE):
        try:
            settings["token"] = open(environ[ENV_TOKEN_FILE], encoding="utf-8").read().strip()
        except OSError as exc:
            raise UsageError(
                f"{ENV_TOKEN_FILE}: cannot read the token: {exc.strerror}",
                path=environ[ENV_TOKEN_FILE],
            ) from None
    if environ.get(ENV_CA) or environ.get("X509_CERT_DIR"):
        settings["verify"] = environ.get(ENV_CA) or environ["X509_CERT_DIR"]
    return settings


def to_metacat(md: dict, namespace: str) -> dict:
    """A MetaCat file declaration from SAM-shaped (normalized) metadata."""
    meta: dict = {}
    for field in CORE_FIELDS:
        if field in md:
            meta[f"core.{field}"] = md[field]
    for key, value in (md.get("application") or {}).items():
        meta[f"core.application.{key}"] = value
    if md.get("runs"):
        meta["core.runs"] = sorted({run for run, _, _ in md["runs"]})
        meta["core.runs_subruns"] = [run * SUBRUNS + subrun for run, subrun, _ in md["runs"]]
        meta["core.run_type"] = md["runs"][0][2]
    for key, value in md.items():
        if "." in key:
            meta[key] = value
    info = {
        "namespace": namespace,
        "name": md["file_name"],
        "size": md.get("file_size", 0),
        "metadata": meta,
        "parents": [{"namespace": namespace, "name": name} for name in parent_names(md)],
    }
    adler = [c.split(":", 1)[1] for c in md.get("checksum", []) if c.startswith("adler32:")]
    info["checksums"] = {"adler32": adler[0]} if adler else {}
    return info


def from_metacat(record: dict, parents: list[str]) -> dict:
    """SAM-shaped metadata from a MetaCat file record (``parents`` already resolved to names)."""
    meta = dict(record.get("metadata") or {})
    md: dict = {"file_name": record["name"]}
    fid = file_id(record.get("fid"))
    if isinstance(fid, int):
        md["file_id"] = fid
    elif fid is not None:
        md["MetaCat.fid"] = fid
    if not is_placeholder(meta):
        md["file_size"] = record.get("size")
    for field in CORE_FIELDS:
        if f"core.{field}" in meta:
            md[field] = meta.pop(f"core.{field}")
    application = {
        key: meta.pop(f"core.application.{key}")
        for key in ("family", "name", "version")
        if f"core.application.{key}" in meta
    }
    if application:
        md["application"] = application
    meta.pop("core.runs", None)
    subruns, run_type = meta.pop("core.runs_subruns", None), meta.pop("core.run_type", None)
    if subruns:
        md["runs"] = [[value // SUBRUNS, value % SUBRUNS, run_type] for value in subruns]
    checksums = record.get("checksums") or {}
    if "adler32" in checksums:
        md["checksum"] = [f"adler32:{checksums['adler32']}"]
    if parents:
        md["parents"] = [{"file_name": name} for name in parents]
    md.update(meta)
    return normalize_metadata(md, strict=False)


def file_id(fid):
    """A fid as SAM's integer ``file_id`` when it is one, else as the string MetaCat gave."""
    if fid is None or fid == "":
        return None
    text = str(fid)
    return int(text) if text.isdigit() else text


class MetaCatCatalog(Catalog):
    """The catalogue behind a MetaCat server (see the module docstring)."""

    def __init__(
        self,
        server_url: str,
        namespace: str,
        dataset: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        verify: bool | str = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        deadline: float | None = None,
    ):
        super().__init__(url or f"metacat+{server_url}?namespace={namespace}", deadline=deadline)
        self.namespace, self.dataset = namespace, dataset
        self.http = HttpTransport(
            server_url,
            self.budget,
            name="metacat",
            url=self.url,
            headers={"X-Authentication-Token": token} if token else None,
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff=backoff,
        )

    @classmethod
    def from_url(cls, url: str, **options) -> MetaCatCatalog:
        server, namespace, dataset = parse_url(url)
        settings = settings_from_environment()
        settings.update(options)
        return cls(server, namespace, dataset, url=url, **settings)

    def close(self) -> None:
        self.http.close()

    # --- transport ----------------------------------------------------------------------

    def _fail(self, response: requests.Response, file_name: str | None = None) -> CatalogError:
        status = response.status_code
        if status == 404 and file_name is not None:
            return FileNotDeclared("not declared in the catalogue", path=file_name)
        hint = (
            f" (the token comes from {ENV_TOKEN} or {ENV_TOKEN_FILE})"
            if status in (401, 403)
            else ""
        )
        return CatalogError(f"metacat: HTTP {status} {error_text(response)}{hint}", path=file_name)

    def _answer(self, response: requests.Response, what: str):
        """The JSON of an answer; MetaCat streams lists as ``application/json-seq`` too."""
        if "json-seq" in response.headers.get("Content-Type", ""):
            try:
                return [json.loads(part) for part in response.text.split("\x1e") if part.strip()]
            except ValueError:
                raise CatalogError(f"metacat: {what}: the answer is not a JSON sequence") from None
        body = self.http.json(response, what)
        if isinstance(body, dict) and "results" in body:
            body = body["results"]
        return body

    def _post_list(self, path: str, body, what: str) -> list[dict]:
        data = body if isinstance(body, str) else json.dumps(body)
        response = self.http.request(
            "POST", path, data=data.encode("utf-8"), headers={"Content-Type": "text/json"}
        )
        if response.status_code != 200:
            raise self._fail(response)
        entries = self._answer(response, what)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise CatalogError(f"metacat: {what}: expected a JSON list of file records")
        return entries

    def _files(self, lookups: list[dict], *, metadata: bool = True) -> list[dict]:
        """Records of many files (``[{"namespace", "name"}]`` or ``[{"fid"}]``), one request."""
        if not lookups:
            return []
        flag = "yes" if metadata else "no"
        entries = self._post_list(
            f"/data/files?with_metadata={flag}&with_provenance=yes", lookups, "POST data/files"
        )
        for entry in entries:
            if not isinstance(entry.get("name"), str) or "fid" not in entry:
                raise CatalogError(
                    f"metacat: POST data/files: a record without name or fid: {str(entry)[:80]}"
                )
        return entries

    def _names_of(self, links: list, known: dict[str, str]) -> list[str]:
        """Names of provenance links (dicts with a name, or fids), looking unknown fids up."""
        names, fids = [], []
        for link in links or []:
            if isinstance(link, dict) and isinstance(link.get("name"), str):
                names.append(link["name"])
            else:
                fid = str(link["fid"] if isinstance(link, dict) else link)
                fids.append(fid)
                names.append(fid)
        missing = [fid for fid in fids if fid not in known]
        for batch in chunks(missing):
            known.update(
                {
                    str(e["fid"]): e["name"]
                    for e in self._files([{"fid": f} for f in batch], metadata=False)
                }
            )
        return [known.get(name, name) for name in names]

    # --- the catalogue ------------------------------------------------------------------

    def get(self, file_name: str) -> dict:
        response = self.http.request(
            "GET",
            "/data/file",
            params={
                "namespace": self.namespace,
                "name": file_name,
                "with_metadata": "yes",
                "with_provenance": "yes",
            },
        )
        if response.status_code != 200:
            raise self._fail(response, file_name)
        record = self._answer(response, "GET data/file")
        if not isinstance(record, dict) or record.get("name") != file_name:
            raise CatalogError(
                f"metacat: GET data/file: the answer is not the record of {file_name}"
            )
        return from_metacat(record, self._names_of(record.get("parents"), {}))

    def fetch_records(self, names: list[str]) -> dict[str, dict]:
        entries = self._files([{"namespace": self.namespace, "name": name} for name in names])
        asked = set(names)
        known = {str(e["fid"]): e["name"] for e in entries}
        return {
            e["name"]: from_metacat(e, self._names_of(e.get("parents"), known))
            for e in entries
            if e["name"] in asked
        }

    def children(self, file_name: str) -> list[str]:
        [entry] = self._files(
            [{"namespace": self.namespace, "name": file_name}], metadata=False
        ) or [None]
        if entry is None:
            raise FileNotDeclared("not declared in the catalogue", path=file_name)
        return sorted(self._names_of(entry.get("children"), {}))

    def parents(self, file_name: str) -> list[str]:
        return parent_names(self.get(file_name))

    def children_of(self, names, *, data_tier: str | None = None) -> dict[str, list[str]]:
        """One request per batch for the files' provenance, one for their children's records."""
        names = list(dict.fromkeys(names))
        out: dict[str, list[str]] = {name: [] for name in names}
        for batch in chunks(names):
            entries = self._files(
                [{"namespace": self.namespace, "name": n} for n in batch], metadata=False
            )
            links = {
                e["name"]: [
                    str(c["fid"] if isinstance(c, dict) else c) for c in e.get("children") or []
                ]
                for e in entries
            }
            fids = sorted({fid for children in links.values() for fid in children})
            children = {
                str(e["fid"]): e
                for chunk in chunks(fids)
                for e in self._files([{"fid": f} for f in chunk])
            }
            for name, child_fids in links.items():
                out[name] = sorted(
                    children[f]["name"]
                    for f in child_fids
                    if f in children
                    and (
                        data_tier is None
                        or (children[f].get("metadata") or {}).get("core.data_tier") == data_tier
                    )
                )
        return out

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        clauses = []
        if run is not None:
            clauses.append(f"core.runs[any] = {int(run)}")
        if data_tier is not None:
            if "'" in data_tier:
                raise CatalogError(f"metacat: cannot quote data tier {data_tier!r} in MQL")
            clauses.append(f"core.data_tier = '{data_tier}'")
        if not clauses:
            raise CatalogError("metacat: listing files needs a run or a data tier")
        mql = "files where " + " and ".join(clauses)
        entries = self._post_list(
            f"/data/query?with_meta=no&with_provenance=no&namespace={self.namespace}",
            mql,
            "POST data/query",
        )
        return sorted(
            e["name"] for e in entries if e.get("namespace", self.namespace) == self.namespace
        )

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        md = prepare_declaration(metadata)
        if self.dataset is None:
            raise UsageError(
                f"{self.url}: declaring needs a dataset (add &dataset=NS:NAME to the URL)"
            )
        return self.declare_without_transactions(md, exclusive_tier, self._post)

    def _post(self, md: dict):
        response = self.http.request(
            "POST",
            f"/data/declare_files?dataset={self.dataset}",
            data=json.dumps([to_metacat(md, self.namespace)]).encode("utf-8"),
            headers={"Content-Type": "text/json"},
        )
        if response.status_code == 409:
            return None
        if response.status_code != 200:
            raise self._fail(response)
        return self._declared_fid(response, md["file_name"])

    def _declared_fid(self, response: requests.Response, name: str):
        try:
            answer = self._answer(response, "POST data/declare_files")
        except CatalogError:
            answer = None
        if (
            isinstance(answer, list)
            and len(answer) == 1
            and isinstance(answer[0], dict)
            and answer[0].get("fid") not in (None, "")
        ):
            return file_id(answer[0]["fid"])
        shown = " ".join(response.text.split())[:60]
        raise CatalogError(
            f"metacat: the declaration is not confirmed: POST data/declare_files answered HTTP "
            f"{response.status_code} without a file id: {shown!r}",
            path=name,
        )
