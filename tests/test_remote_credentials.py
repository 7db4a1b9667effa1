"""Credential discovery for https:// (WLCG bearer token order, X.509 proxy, CA folder) and the
URL naming that every remote step relies on."""

from __future__ import annotations

import os

import pytest

from engine.remote import RemotePath, is_url, location
from engine.remote.credentials import bearer_token, ca_location, x509_proxy


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (
        "BEARER_TOKEN",
        "BEARER_TOKEN_FILE",
        "XDG_RUNTIME_DIR",
        "X509_USER_PROXY",
        "X509_CERT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_bearer_token_discovery_follows_the_wlcg_order(clean_env, monkeypatch):
    runtime = clean_env / f"bt_u{os.geteuid()}"
    runtime.write_text("from-runtime-dir\n")
    assert bearer_token() == "from-runtime-dir"
    named = clean_env / "named-token"
    named.write_text("  from-file  \n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(named))
    assert bearer_token() == "from-file"  # BEARER_TOKEN_FILE before the runtime folder
    monkeypatch.setenv("BEARER_TOKEN", "from-variable")
    assert bearer_token() == "from-variable"  # the variable before everything


def test_named_token_file_that_is_missing_means_no_token(clean_env, monkeypatch):
    (clean_env / f"bt_u{os.geteuid()}").write_text("not-this-one")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(clean_env / "absent"))
    assert bearer_token() is None  # a named file replaces the default places


def test_proxy_and_ca_folder_come_from_the_grid_variables(clean_env, monkeypatch):
    monkeypatch.setenv("X509_USER_PROXY", "/some/proxy.pem")
    monkeypatch.setenv("X509_CERT_DIR", "/some/certificates")
    assert x509_proxy() == "/some/proxy.pem"
    assert ca_location() == "/some/certificates"


@pytest.mark.parametrize(
    "url, name, parent",
    [
        ("root://host:1094//store/run/x.tmb", "x.tmb", "root://host:1094//store/run"),
        ("root://host/store/run/x.tmb", "x.tmb", "root://host//store/run"),
        ("https://host:8443/store/run/x.tmb", "x.tmb", "https://host:8443/store/run"),
        ("davs://host/store/run/", "run", "davs://host/store"),
    ],
)
def test_urls_keep_their_spelling_and_name_their_neighbours(url, name, parent):
    path = location(url)
    assert isinstance(path, RemotePath) and is_url(url)
    assert path.name == name and str(path.parent) == parent
    assert str(path.with_name(name + ".json")) == f"{parent}/{name}.json"
    assert location("root://host//a/b") == location("root://host/a/b")


def test_local_names_stay_paths():
    assert not is_url("run/x.tmb") and not is_url("file:///x")
    assert location("run/x.tmb").name == "x.tmb" and not isinstance(
        location("run/x.tmb"), RemotePath
    )
