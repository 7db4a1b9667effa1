"""A small Rucio server for tests: the REST calls ``rucio-clients`` makes to register a replica.

The calls, as ``rucio.client.Client`` (``rucio-clients`` 41) makes them (``baseclient``,
``replicaclient.add_replicas``, ``didclient.attach_dids`` / ``get_did``), on 127.0.0.1:

- ``GET /auth/userpass`` (``X-Rucio-Username``/``X-Rucio-Password``): 200 with the token in
  ``X-Rucio-Auth-Token``; 401 ``CannotAuthenticate`` for other credentials;
- ``POST /replicas`` (``{"rse", "files": [{"scope", "name", "bytes", "adler32", "pfn"}]}``): 201;
  404 ``RSENotFound``; 409 ``Duplicate`` when the RSE holds the replica; 409
  ``FileConsistencyMismatch`` when the file is known with other bytes or adler32;
- ``GET /dids/SCOPE/NAME``: ``{"scope", "name", "type", "bytes", "adler32"}`` (404
  ``DataIdentifierNotFound``);
- ``POST /dids/SCOPE/DATASET/dids`` (``{"dids": [...], "rse"}``): 201; 404 for an unknown
  dataset; 409 ``FileAlreadyExists`` when attached already.

Errors carry Rucio's ``ExceptionClass`` and ``ExceptionMessage`` headers and JSON body.
Steering and ``requests`` are the SAM test server's (``fail_next``, ``drop_next`` ...).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from samweb_server import SamWebServer

USER, PASSWORD, TOKEN = "tmbmerge", "secret", "rucio-token-1"


def _error(status: int, kind: str, message: str):
    return (
        status,
        "application/json",
        json.dumps({"ExceptionClass": kind, "ExceptionMessage": message}),
    )


class RucioServer(SamWebServer):
    def __init__(self, rses=("FNAL_DCACHE",), datasets=("tmb:merged_178000",)) -> None:
        super().__init__()
        self.prefix = ""
        self.rses = {rse: {} for rse in rses}  # rse -> {(scope, name): pfn}
        self.dids: dict[tuple[str, str], dict] = {}
        self.datasets = {tuple(d.split(":", 1)): [] for d in datasets}

    @property
    def host(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def config(self, folder) -> str:
        """A rucio.cfg for this server (the token file kept in ``folder``); returns its path."""
        path = folder / "rucio.cfg"
        path.write_text(
            f"[client]\nrucio_host = {self.host}\nauth_host = {self.host}\nauth_type = userpass\n"
            f"username = {USER}\npassword = {PASSWORD}\naccount = {USER}\n"
            f"auth_token_file_path = {folder}/rucio-token\nrequest_retries = 0\n"
        )
        return str(path)

    def handle(self, method, raw_path, headers, body):
        if raw_path.startswith("/auth/userpass"):
            self.requests.append((method, raw_path, headers))
            if (headers.get("X-Rucio-Username"), headers.get("X-Rucio-Password")) != (
                USER,
                PASSWORD,
            ):
                return _error(401, "CannotAuthenticate", "wrong credentials")
            return (
                200,
                "application/octet-stream",
                "",
                {
                    "X-Rucio-Auth-Token": TOKEN,
                    "X-Rucio-Auth-Token-Expires": "Mon, 30 Nov 2026 23:00:00 UTC",
                },
            )
        return super().handle(method, raw_path, headers, body)

    def authorized(self, headers):
        return True

    def route(self, method, path, query, headers, body):
        if headers.get("X-Rucio-Auth-Token") != TOKEN:
            return _error(401, "CannotAuthenticate", "no valid token")
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "POST" and parts == ["replicas"]:
                return self._add_replicas(json.loads(body))
            if method == "GET" and len(parts) == 3 and parts[0] == "dids":
                did = self.dids.get((parts[1], parts[2]))
                if did is None:
                    return _error(404, "DataIdentifierNotFound", f"{parts[1]}:{parts[2]} not found")
                return 200, "application/json", json.dumps(did)
            if method == "POST" and len(parts) == 4 and parts[0] == "dids" and parts[3] == "dids":
                return self._attach((parts[1], parts[2]), json.loads(body))
        return _error(404, "NotFound", f"no such call {method} {path}")

    def _add_replicas(self, data):
        rse = data["rse"]
        if rse not in self.rses:
            return _error(404, "RSENotFound", f"RSE {rse} not found")
        for f in data["files"]:
            key = (f["scope"], f["name"])
            known = self.dids.get(key)
            if known and (known["bytes"], known["adler32"]) != (f["bytes"], f["adler32"]):
                return _error(
                    409, "FileConsistencyMismatch", f"{key[0]}:{key[1]}: bytes or adler32 differ"
                )
            if key in self.rses[rse]:
                return _error(409, "Duplicate", f"replica {key[0]}:{key[1]} exists at {rse}")
        for f in data["files"]:
            key = (f["scope"], f["name"])
            self.dids.setdefault(
                key,
                {
                    "scope": key[0],
                    "name": key[1],
                    "type": "FILE",
                    "bytes": f["bytes"],
                    "adler32": f["adler32"],
                },
            )
            self.rses[rse][key] = f.get("pfn")
        return 201, "text/plain", "Created"

    def _attach(self, dataset, data):
        if dataset not in self.datasets:
            return _error(
                404, "DataIdentifierNotFound", f"dataset {dataset[0]}:{dataset[1]} not found"
            )
        for did in data["dids"]:
            key = (did["scope"], did["name"])
            if key in self.datasets[dataset]:
                return _error(409, "FileAlreadyExists", f"{key} is attached already")
        self.datasets[dataset].extend((d["scope"], d["name"]) for d in data["dids"])
        return 201, "text/plain", "Created"
