"""A small MetaCat server for tests: the web API calls tmbmerge makes, in memory, with the SAM test
server's faults.

The calls, as MetaCat's own client makes them (``metacat.webapi.webapi.MetaCatClient`` in the
``metacat-client`` package, 4.1.5: ``declare_files``, ``get_file``, ``get_files``, ``query``),
under ``/app`` (the server URL) on 127.0.0.1:

- ``POST /data/declare_files?dataset=NS:NAME`` (JSON list of ``{"namespace", "name", "size",
  "checksums", "parents": [{"namespace", "name"}], "metadata"}``): answers ``[{"fid",
  "namespace", "name"}]``; 409 when a file exists, 404 for an unknown dataset or parent, 400
  for a metadata key without a dot (MetaCat's rule) or a size that is not a whole number;
- ``GET /data/file?namespace=&name=&with_metadata=&with_provenance=``: the record, parents and
  children as lists of fids (as ``get_file``'s docstring shows them); 404 when unknown;
- ``POST /data/files?with_metadata=&with_provenance=`` (JSON list of ``{"namespace", "name"}``
  or ``{"fid"}``): the records found;
- ``POST /data/query?namespace=NS`` (MQL text): only ``files where core.runs[any] = N`` and/or
  ``core.data_tier = 'T'`` joined by ``and`` (what tmbmerge asks).

Errors are MetaCat's JSON ``{"error": {"type", "value"}}``.  Authentication, when ``token`` is
given, is the ``X-Authentication-Token`` header.  Steering (``fail_next``, ``answer_next``,
``drop_next``, ``delay_next``, ``before_declare``) and ``requests`` are the SAM test server's.
"""

from __future__ import annotations

import json
import re

from samweb_server import SamWebServer


def _error(status: int, kind: str, value: str) -> tuple[int, str, str]:
    return status, "application/json", json.dumps({"error": {"type": kind, "value": value}})


def _json(value) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps(value)


class MetaCatServer(SamWebServer):
    def __init__(self, datasets=("tmb:merged",), **options) -> None:
        super().__init__(**options)
        self.prefix = "/app"
        self.datasets = {name: [] for name in datasets}
        self.files: dict[tuple[str, str], dict] = {}  # (namespace, name) -> record
        self._next_fid = 1000

    def catalog_url(self, namespace: str = "tmb", dataset: str | None = "tmb:merged") -> str:
        query = f"namespace={namespace}" + (f"&dataset={dataset}" if dataset else "")
        return f"metacat+{self.scheme}://127.0.0.1:{self.port}{self.prefix}?{query}"

    @property
    def url(self) -> str:
        return self.catalog_url()

    def authorized(self, headers: dict) -> bool:
        return headers.get("X-Authentication-Token") == self.token

    def by_fid(self, fid: str) -> dict | None:
        return next((r for r in self.files.values() if r["fid"] == fid), None)

    def route(self, method, path, query, headers, body):
        one = {key: values[-1] for key, values in query.items()}
        if method == "POST" and path == "/data/declare_files":
            return self._declare(one.get("dataset", ""), body)
        if method == "GET" and path == "/data/file":
            with self._lock:
                record = self.files.get((one.get("namespace"), one.get("name")))
                return (
                    _json(self._shown(record))
                    if record
                    else _error(404, "NotFoundError", "file not found")
                )
        if method == "POST" and path == "/data/files":
            return self._many(body)
        if method == "POST" and path == "/data/query":
            return self._query(one.get("namespace"), body.decode("utf-8"))
        return _error(404, "NotFoundError", f"no such API path {method} {path}")

    def _shown(self, record: dict) -> dict:
        children = [r["fid"] for r in self.files.values() if record["fid"] in r["parents"]]
        return dict(record, children=children)

    def _declare(self, dataset: str, body: bytes):
        try:
            files = json.loads(body)
        except ValueError:
            return _error(400, "BadRequestError", "not JSON")
        if dataset not in self.datasets:
            return _error(404, "NotFoundError", f"dataset {dataset} not found")
        for info in files:
            if not isinstance(info.get("size"), int) or info["size"] < 0:
                return _error(
                    400, "BadRequestError", f"file size is invalid for {info.get('name')}"
                )
            bad = [key for key in info.get("metadata", {}) if "." not in key]
            if bad:
                return _error(
                    400, "InvalidMetadataError", f"metadata keys must contain a dot: {bad}"
                )
        if self.before_declare is not None:
            for info in files:
                self.before_declare(info)
        with self._lock:
            existing = [
                f"{i['namespace']}:{i['name']}"
                for i in files
                if (i["namespace"], i["name"]) in self.files
            ]
            if existing:
                return _error(409, "AlreadyExistsError", "\n".join(["Already exist:"] + existing))
            answers = []
            for info in files:
                parents = []
                for parent in info.get("parents", []):
                    record = self.files.get((parent["namespace"], parent["name"]))
                    if record is None:
                        return _error(
                            404,
                            "NotFoundError",
                            f"parent {parent['namespace']}:{parent['name']} not found",
                        )
                    parents.append(record["fid"])
                answers.append(self._store(info, parents, dataset))
        return _json(answers)

    def _store(self, info: dict, parents: list[str], dataset: str | None = None) -> dict:
        self._next_fid += 1
        fid = str(self._next_fid)
        self.files[(info["namespace"], info["name"])] = {
            "fid": fid,
            "namespace": info["namespace"],
            "name": info["name"],
            "size": info["size"],
            "checksums": dict(info.get("checksums", {})),
            "metadata": dict(info.get("metadata", {})),
            "parents": parents,
            "creator": "tmbmerge-test",
        }
        if dataset:
            self.datasets[dataset].append(fid)
        return {"fid": fid, "namespace": info["namespace"], "name": info["name"]}

    def put(self, info: dict) -> str:
        """Store a file directly (parents by name, in its namespace), as an import would."""
        with self._lock:
            parents = [
                self.files[(info["namespace"], p["name"])]["fid"] for p in info.get("parents", [])
            ]
            return self._store(info, parents)["fid"]

    def _many(self, body: bytes):
        try:
            lookups = json.loads(body)
        except ValueError:
            return _error(400, "BadRequestError", "not JSON")
        found = []
        with self._lock:
            for item in lookups:
                record = (
                    self.by_fid(str(item["fid"]))
                    if "fid" in item
                    else self.files.get((item.get("namespace"), item.get("name")))
                )
                if record is not None:
                    found.append(self._shown(record))
        return _json(found)

    def _query(self, namespace: str | None, mql: str):
        match = re.fullmatch(r"files where (.+)", mql.strip())
        if not match:
            return _error(400, "MQLSyntaxError", f"cannot parse {mql!r}")
        tests = []
        for clause in match.group(1).split(" and "):
            run = re.fullmatch(r"core\.runs\[any\] = (\d+)", clause.strip())
            tier = re.fullmatch(r"core\.data_tier = '([^']*)'", clause.strip())
            if run:
                wanted_run = int(run.group(1))
                tests.append(lambda r, n=wanted_run: n in r["metadata"].get("core.runs", []))
            elif tier:
                wanted_tier = tier.group(1)
                tests.append(lambda r, t=wanted_tier: r["metadata"].get("core.data_tier") == t)
            else:
                return _error(400, "MQLSyntaxError", f"cannot parse {clause!r}")
        with self._lock:
            return _json(
                [
                    {"fid": r["fid"], "namespace": r["namespace"], "name": r["name"]}
                    for r in self.files.values()
                    if (namespace is None or r["namespace"] == namespace)
                    and all(t(r) for t in tests)
                ]
            )
