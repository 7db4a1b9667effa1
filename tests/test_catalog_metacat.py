"""The MetaCat client against tests/metacat_server.py: the shared contract, faults, and a declaring
merge-run.

The server implements the MetaCat web API calls the client makes, as MetaCat's own client
(``metacat-client`` 4.1.5, ``metacat/webapi/webapi.py``) makes them: ``POST data/declare_files``
(``declare_files``), ``GET data/file`` (``get_file``), ``POST data/files`` (``get_files``) and
``POST data/query`` (``query``, MQL).  Faults as for SAM web: 5xx, a hang, a dropped connection,
an answer that is not what was asked.
"""

from __future__ import annotations

import pytest
from catalog_contract import CatalogContract, raw, unmerged
from metacat_server import MetaCatServer
from test_merge_catalog import catalog_import

from bindings.catalog import ALREADY_DECLARED, DECLARED, open_catalog
from bindings.catalog.metacat import MetaCatCatalog, from_metacat, parse_url, to_metacat
from engine.errors import (
    AlreadyMerged,
    CatalogError,
    CatalogUnavailable,
    DeclarationConflict,
    UsageError,
)
from engine.metadata import normalize_metadata

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 2, "backoff": 0.0}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (
        "TMBMERGE_METACAT_TOKEN",
        "TMBMERGE_METACAT_TOKEN_FILE",
        "TMBMERGE_METACAT_CA",
        "X509_CERT_DIR",
        "TMBMERGE_CATALOG_DEADLINE",
        "TMBMERGE_CATALOG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with MetaCatServer() as running:
        yield running


@pytest.fixture
def catalog(server):
    with open_catalog(server.url, **FAST) as opened:
        yield opened


class TestMetaCatCatalog(CatalogContract):
    pass  # the ``catalog`` fixture above serves the shared contract


def declarations(server) -> list:
    return [r for r in server.requests if r[0] == "POST" and "/data/declare_files" in r[1]]


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "metacat+https://metacat.fnal.gov:9443/dune_meta_prod/app?namespace=tmb&dataset=tmb:merged",
            ("https://metacat.fnal.gov:9443/dune_meta_prod/app", "tmb", "tmb:merged"),
        ),
        (
            "metacat+http://127.0.0.1:8/app/?namespace=tmb&dataset=merged",
            ("http://127.0.0.1:8/app", "tmb", "tmb:merged"),
        ),
        ("metacat+https://host/app?namespace=tmb", ("https://host/app", "tmb", None)),
    ],
)
def test_urls(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "metacat+https://host/app",
        "metacat+ftp://host/app?namespace=x",
        "metacat+https://host/app?namespace=x&colour=red",
    ],
)
def test_bad_urls(url):
    with pytest.raises(UsageError):
        open_catalog(url)


def test_sam_fields_travel_as_core_metadata_and_come_back():
    md = normalize_metadata(unmerged(**{"Reco.pass": 2}))
    info = to_metacat(md, "tmb")
    assert info["size"] == md["file_size"] and info["checksums"] == {"adler32": "0a1b0003"}
    assert info["parents"] == [{"namespace": "tmb", "name": "raw_0000178000_p003.raw"}]
    assert info["metadata"]["core.data_tier"] == "unmerged-thumbnail"
    assert (
        info["metadata"]["core.runs"] == [178000] and info["metadata"]["core.run_type"] == "physics"
    )
    assert (
        info["metadata"]["core.application.version"] == "p17.09.03"
        and info["metadata"]["Reco.pass"] == 2
    )
    assert all("." in key for key in info["metadata"])
    back = from_metacat(dict(info, fid="7"), ["raw_0000178000_p003.raw"])
    assert back == dict(md, file_id=7)
    assert (
        from_metacat(dict(info, fid="a1b2"), ["raw_0000178000_p003.raw"])["MetaCat.fid"] == "a1b2"
    )


def test_declaration_goes_to_the_dataset_with_namespace_size_adler32_and_parents(server, catalog):
    catalog.declare(raw())
    result = catalog.declare(unmerged())
    assert result.status == DECLARED
    stored = server.files[("tmb", unmerged()["file_name"])]
    assert stored["size"] == unmerged()["file_size"] and stored["checksums"] == {
        "adler32": "0a1b0003"
    }
    assert stored["parents"] == [server.files[("tmb", raw()["file_name"])]["fid"]]
    assert str(result.file_id) in server.datasets["tmb:merged"]


def test_a_duplicate_is_compared_not_accepted(server, catalog):
    catalog.declare(raw())
    assert catalog.declare(raw()).status == ALREADY_DECLARED
    with pytest.raises(DeclarationConflict, match="different file_size"):
        catalog.declare(dict(raw(), file_size=5))


@pytest.mark.parametrize("body", ["<html>login</html>", "[]", '[{"name": "x"}]'])
def test_a_200_without_a_fid_is_not_a_declaration(server, catalog, body):
    server.answer_next(1, 200, body, "text/html")
    with pytest.raises(CatalogError, match="the declaration is not confirmed"):
        catalog.declare(raw())


def test_declaring_needs_a_dataset(server):
    with open_catalog(server.catalog_url(dataset=None), **FAST) as catalog:
        assert isinstance(catalog, MetaCatCatalog) and catalog.dataset is None
        with pytest.raises(UsageError, match="needs a dataset"):
            catalog.declare(raw())


@pytest.mark.parametrize("fault", ["503", "drop", "hang"])
def test_faults_are_retried(server, fault):
    with open_catalog(server.url, **dict(FAST, read_timeout=0.3)) as catalog:
        catalog.declare(raw())
        {
            "503": lambda: server.fail_next(1, 503),
            "drop": lambda: server.drop_next(1),
            "hang": lambda: server.delay_next(1, 1.0),
        }[fault]()
        assert catalog.get(raw()["file_name"])["file_size"] == raw()["file_size"]


def test_retries_run_out(server, catalog):
    server.fail_next(10, 502)
    with pytest.raises(
        CatalogUnavailable, match="metacat GET /data/file failed 3 times, last: HTTP 502"
    ):
        catalog.get("anything")


def test_token_is_sent_as_metacat_expects(monkeypatch):
    monkeypatch.setenv("TMBMERGE_METACAT_TOKEN", "t0ken")
    with MetaCatServer(token="t0ken") as server, open_catalog(server.url, **FAST) as catalog:
        assert catalog.declare(raw()).status == DECLARED
    monkeypatch.setenv("TMBMERGE_METACAT_TOKEN", "wrong")
    with MetaCatServer(token="t0ken") as server, open_catalog(server.url, **FAST) as catalog:
        with pytest.raises(CatalogError, match="HTTP 401.*TMBMERGE_METACAT_TOKEN"):
            catalog.declare(raw())


def test_not_merged_twice_before_and_after_the_declaration(server, catalog):
    for n in (1, 2):
        catalog.declare(raw(n))
        catalog.declare(unmerged(n))
    merged = {
        "file_name": "first.tmb",
        "file_size": 9,
        "data_tier": "thumbnail",
        "parents": [{"file_name": unmerged(n)["file_name"]} for n in (1, 2)],
    }
    catalog.declare(merged, exclusive_tier="thumbnail")
    with pytest.raises(AlreadyMerged, match="merged already into first.tmb"):
        catalog.declare(dict(merged, file_name="second.tmb"), exclusive_tier="thumbnail")
    assert ("tmb", "second.tmb") not in server.files
    # a third merge declared by someone else between our check and our declaration
    catalog.declare(raw(3))
    catalog.declare(unmerged(3))
    third = dict(merged, file_name="third.tmb", parents=[{"file_name": unmerged(3)["file_name"]}])
    server.before_declare = lambda info: (
        info["name"] == "third.tmb"
        and server.put(
            {
                "namespace": "tmb",
                "name": "racer.tmb",
                "size": 1,
                "metadata": {"core.data_tier": "thumbnail"},
                "parents": [{"name": unmerged(3)["file_name"]}],
            }
        )
    )
    with pytest.raises(
        AlreadyMerged, match="declared, but its inputs were declared merged into racer.tmb"
    ):
        catalog.declare(third, exclusive_tier="thumbnail")


def test_batches_ask_per_hundred_files(server, catalog):
    for n in range(150):
        server.put(
            {
                "namespace": "tmb",
                "name": f"f{n}.tmb",
                "size": n,
                "metadata": {"core.data_tier": "x"},
            }
        )
    server.requests.clear()
    assert len(catalog.records([f"f{n}.tmb" for n in range(150)] + ["nothing"])) == 150
    assert len(server.requests) == 2


def test_merge_run_declares_into_metacat(cli, tmb_run, tmp_path, server):
    catalog_import(cli, server, tmb_run[0].parent)
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--catalog",
        server.url,
        "--declare",
        "--json",
    )
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    assert output["declared"] == DECLARED
    name = output["output"].rsplit("/", 1)[1]
    record = server.files[("tmb", name)]
    assert record["metadata"]["core.data_tier"] == "thumbnail"
    assert record["checksums"]["adler32"] == output["checksum"].split(":")[1]
    assert [server.by_fid(f)["name"] for f in record["parents"]] == [p.name for p in tmb_run]
    assert result.json()["catalog"]["requests"] > 0
    again = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "elsewhere",
        "--catalog",
        server.url,
        "--declare",
        "--json",
    )
    assert again.code == 8 and "already merged" in again.out + again.err
