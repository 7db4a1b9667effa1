"""Rucio replica registration (``--register rucio:RSE?scope=S&dataset=D``) with rucio-clients,
against tests/rucio_server.py.

The server implements the REST calls rucio-clients 41 makes for it (``rucio/client/
baseclient.py``: ``GET /auth/userpass``; ``replicaclient.py``: ``POST /replicas``;
``didclient.py``: ``GET /dids/SCOPE/NAME``, ``POST /dids/SCOPE/NAME/dids``).  Faults: a
mismatch Rucio reports, an unknown RSE or dataset, a 5xx, refused credentials.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rucio.client")

from rucio.common.config import clean_cached_config  # noqa: E402
from rucio_server import RucioServer  # noqa: E402
from test_merge_catalog import catalog_import  # noqa: E402

from bindings.catalog.rucio_register import (
    ALREADY_REGISTERED,
    REGISTERED,
    RucioRegistration,
    parse_spec,
)  # noqa: E402
from engine.errors import CatalogError, UsageError  # noqa: E402

SPEC = "rucio:FNAL_DCACHE?scope=tmb&dataset=merged_178000&pfn=root://dcache.fnal.gov/pnfs/tmb"
MD = {
    "file_name": "tmb_0000178000_mrg_p000-p005.tmb",
    "file_size": 1234,
    "checksum": ["adler32:0a0b0c0d"],
}


@pytest.fixture
def rucio(tmp_path, monkeypatch):
    with RucioServer() as server:
        for name in ("RUCIO_ACCOUNT", "RUCIO_AUTH_TYPE", "RUCIO_VO", "X509_CERT_DIR", "RUCIO_HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("RUCIO_CONFIG", server.config(tmp_path))
        clean_cached_config()  # rucio-clients reads its configuration once per process
        yield server
    clean_cached_config()


def test_specs():
    assert parse_spec(SPEC) == (
        "FNAL_DCACHE",
        "tmb",
        "merged_178000",
        "root://dcache.fnal.gov/pnfs/tmb",
    )
    assert parse_spec("rucio:X?scope=s&dataset=s:d") == ("X", "s", "d", None)
    for bad in (
        "rucio:X",
        "rucio:?scope=s&dataset=d",
        "rucio:X?scope=s",
        "fts:X?scope=s&dataset=d",
        "rucio:X?scope=s&dataset=other:d",
        "rucio:X?scope=s&dataset=d&colour=red",
    ):
        with pytest.raises(UsageError):
            parse_spec(bad)


def test_a_replica_is_registered_and_attached(rucio, tmp_path):
    registration = RucioRegistration(SPEC)
    assert registration.register(tmp_path / MD["file_name"], MD) == REGISTERED
    key = ("tmb", MD["file_name"])
    assert rucio.dids[key] == {
        "scope": "tmb",
        "name": MD["file_name"],
        "type": "FILE",
        "bytes": 1234,
        "adler32": "0a0b0c0d",
    }
    assert rucio.rses["FNAL_DCACHE"][key] == f"root://dcache.fnal.gov/pnfs/tmb/{MD['file_name']}"
    assert rucio.datasets[("tmb", "merged_178000")] == [key]
    # a rerun: the same replica is compared, not added twice
    assert RucioRegistration(SPEC).register(tmp_path / MD["file_name"], MD) == ALREADY_REGISTERED
    assert rucio.datasets[("tmb", "merged_178000")] == [key]


def test_a_mismatch_reported_by_rucio_is_a_catalogue_error(rucio, tmp_path):
    RucioRegistration(SPEC).register(tmp_path / MD["file_name"], MD)
    with pytest.raises(CatalogError) as caught:
        RucioRegistration("rucio:FNAL_DCACHE?scope=tmb&dataset=merged_178000").register(
            tmp_path / MD["file_name"], dict(MD, checksum=["adler32:0a0b0c0e"])
        )
    assert "FileConsistencyMismatch" in str(caught.value) and caught.value.exit_code == 8
    assert str(caught.value).startswith(MD["file_name"] + ": rucio: ")


@pytest.mark.parametrize(
    "spec, error",
    [
        ("rucio:NOWHERE?scope=tmb&dataset=merged_178000", "RSENotFound"),
        ("rucio:FNAL_DCACHE?scope=tmb&dataset=no_such_dataset", "DataIdentifierNotFound"),
    ],
)
def test_rucio_refusals_are_catalogue_errors(rucio, tmp_path, spec, error):
    with pytest.raises(CatalogError, match=error):
        RucioRegistration(spec).register(tmp_path / MD["file_name"], MD)


def test_a_merge_run_registers_its_declared_output(cli, rucio, tmb_run, tmp_path):
    url = f"sqlite://{tmp_path}/catalog.db"
    catalog_import(cli, type("Backend", (), {"url": url}), tmb_run[0].parent)
    out = tmp_path / "out"
    spec = "rucio:FNAL_DCACHE?scope=tmb&dataset=merged_178000"
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        out,
        "--catalog",
        url,
        "--declare",
        "--register",
        spec,
        "--json",
    )
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    assert output["declared"] == "declared" and output["registered"] == REGISTERED
    name = output["output"].rsplit("/", 1)[1]
    assert rucio.dids[("tmb", name)]["adler32"] == output["checksum"].split(":")[1]
    assert rucio.rses["FNAL_DCACHE"][("tmb", name)] == f"file://{out.resolve() / name}"


def test_a_failed_registration_keeps_the_output_and_retires_nothing(cli, rucio, tmb_run, tmp_path):
    url = f"sqlite://{tmp_path}/catalog.db"
    catalog_import(cli, type("Backend", (), {"url": url}), tmb_run[0].parent)
    out, retired = tmp_path / "out", tmp_path / "retired"
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        out,
        "--catalog",
        url,
        "--declare",
        "--register",
        "rucio:NOWHERE?scope=tmb&dataset=merged_178000",
        "--retire-inputs",
        "--retire-dir",
        retired,
        "--json",
    )
    assert result.code == 8, result.err
    [output] = result.json()["outputs"]
    assert "RSENotFound" in output["declare_error"]["message"] and output["retired"] == []
    assert (out / output["output"].rsplit("/", 1)[1]).is_file()
    assert all(p.is_file() for p in tmb_run) and not retired.exists()


@pytest.mark.parametrize("fault", ["503", "drop", "hang"])
def test_faults_are_catalogue_errors_not_hangs(rucio, tmp_path, fault):
    registration = RucioRegistration(SPEC, timeout=1)
    assert registration.client is not None  # authenticated before the fault
    {
        "503": lambda: rucio.fail_next(20, 503),
        "drop": lambda: rucio.drop_next(20),
        "hang": lambda: rucio.delay_next(20, 3.0),
    }[fault]()
    with pytest.raises(CatalogError) as caught:
        registration.register(tmp_path / MD["file_name"], MD)
    assert caught.value.exit_code == 8 and str(caught.value).startswith(
        MD["file_name"] + ": rucio: "
    )
    # a hung answer may come after the server registered it: the retry (a rerun) then compares
    expected = ALREADY_REGISTERED if fault == "hang" else REGISTERED
    rucio.clear_faults()
    assert RucioRegistration(SPEC).register(tmp_path / MD["file_name"], MD) == expected
