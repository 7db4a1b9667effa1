"""A merge and its catalogue, against the local SAM web server (tests/samweb_server.py).

Every scenario of ``MergeCatalogTests`` (see test_merge_catalog.py) runs here with
``--catalog samweb+http://127.0.0.1:PORT/sam/dzero/api``.  To make declarations fail, the
server answers every ``POST /files`` with 503 for a while, more times than the client retries
(``TMBMERGE_SAMWEB_RETRIES=1``); look-ups keep working, as when only a catalogue's write path
is down.  A few checks only make sense over HTTP: the retries really happen, and the server
holds what was posted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from samweb_server import SamWebServer
from test_merge_catalog import RUN, MergeCatalogTests, catalog_import, merge_run, status

RETRIES = 1
SAMWEB_ENV = (
    "TMBMERGE_SAMWEB_CERT",
    "TMBMERGE_SAMWEB_KEY",
    "TMBMERGE_SAMWEB_TOKEN",
    "BEARER_TOKEN_FILE",
    "TMBMERGE_SAMWEB_CA",
    "X509_CERT_DIR",
    "TMBMERGE_SAMWEB_TIMEOUT",
    "TMBMERGE_SAMWEB_RETRIES",
    "X509_USER_PROXY",
    "X509_USER_CERT",
    "X509_USER_KEY",
    "BEARER_TOKEN",
    "TMBMERGE_CATALOG_DEADLINE",
)


class RefusingSamWebServer(SamWebServer):
    """The test server, plus a switch that answers declarations (``POST /files``) with 503."""

    refusing = False

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes):
        if method == "POST" and self.refusing and raw_path.endswith("/files"):
            self.requests.append((method, raw_path, headers))
            return 503, "text/plain", "Service Unavailable"
        return super().handle(method, raw_path, headers, body)


class SamWebBackend:
    def __init__(self, server: RefusingSamWebServer):
        self.server = server
        self.url = server.url

    def refuse_declarations(self) -> None:
        self.server.refusing = True

    def accept_declarations(self) -> None:
        self.server.refusing = False

    def posts(self) -> list[str]:
        return [
            path
            for method, path, _ in self.server.requests
            if method == "POST" and path.endswith("/files")
        ]


@pytest.fixture(autouse=True)
def samweb_environment(monkeypatch):
    for name in SAMWEB_ENV + ("TMBMERGE_CATALOG",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMBMERGE_SAMWEB_RETRIES", str(RETRIES))
    monkeypatch.setenv("TMBMERGE_SAMWEB_TIMEOUT", "5")


@pytest.fixture
def server():
    with RefusingSamWebServer("dzero") as running:
        yield running


class TestMergeWithSamWeb(MergeCatalogTests):
    @pytest.fixture
    def backend(self, server):
        return SamWebBackend(server)


def test_a_declaration_is_retried_then_reported_and_the_server_holds_the_output(
    cli, server, tmb_run, tmp_path
):
    backend = SamWebBackend(server)
    folder = tmb_run[0].parent
    catalog_import(cli, backend, folder)
    out = tmp_path / "out"
    backend.refuse_declarations()
    before = len(backend.posts())
    result = merge_run(cli, backend, folder, out, "--declare", "--json")
    assert result.code == 8
    [failure] = result.json()["failures"]
    assert failure["error"] == "CatalogUnavailable"
    assert f"samweb POST /files failed {RETRIES + 1} times, last: HTTP 503" in failure["message"]
    assert backend.posts()[before:] == ["/sam/dzero/api/files"] * (RETRIES + 1)
    name = f"tmb_{RUN:010d}_mrg_p000-p005.tmb"
    assert name not in server.store
    assert [(e["name"], e["state"]) for e in status(cli, out)["outputs"]] == [(name, "verified")]

    backend.accept_declarations()
    result = merge_run(cli, backend, folder, out, "--declare", "--json")  # the rerun declares it
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    assert output["declared"] == "declared"
    record = server.store[name]
    assert record["file_size"] == (out / name).stat().st_size
    assert record["data_tier"] == "thumbnail"
    assert record["parents"] == [{"file_name": p.name} for p in tmb_run]
    assert Path(output["output"]) == out / name
    assert status(cli, out)["outputs"][0]["state"] == "declared"
