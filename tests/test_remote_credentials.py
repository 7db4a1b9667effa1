"""Credential discovery for https:// (WLCG bearer token order, X.509 proxy, CA folder) and the
URL naming that every remote step relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.remote import RemotePath, is_url, location
from engine.remote.credentials import bearer_token, ca_location, x509_proxy

WORKTREE = Path(__file__).resolve().parents[1]


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


# --- against a server that requires credentials ----------------------------------------------


@pytest.fixture(scope="module")
def guarded():
    """An xrootd whose HTTPS door lets nobody in without a credential: the user certificate the
    tests' CA issued, or a bearer token the server minted for that user (tests/remote_servers)."""
    from remote_servers import XrootdServer, require_servers

    require_servers()
    server = XrootdServer(name="guarded", auth=True)
    yield server
    server.remove()


@pytest.fixture
def guarded_env(guarded, clean_env, monkeypatch, tmb_run, request):
    """No credential in the environment (none in the default places either), the server's CA
    trusted, the small run on the server; returns the run's https:// folder URL."""
    monkeypatch.setenv("X509_CERT_DIR", str(guarded.ca_dir))
    monkeypatch.setenv("TMBMERGE_REMOTE_RETRIES", "0")
    monkeypatch.setenv("TMBMERGE_STAGING", str(clean_env / "staging"))
    from engine.remote import https

    for session in https._sessions.values():  # a new command's connections: xrootd 5.5's HTTP
        session.close()  # door keeps a connection's first authorization for later requests
    https._sessions.clear()
    folder = f"run-{request.node.name}"[:50].replace("[", "-").replace("]", "")
    for path in tmb_run:
        guarded.put(path, folder)
    guarded.owned_by_server(guarded.data / folder)
    return f"{guarded.https_url}/{folder}"


def test_without_a_credential_an_input_is_exit_3_and_an_output_exit_7(cli, guarded_env, tmb_run):
    url = f"{guarded_env}/{tmb_run[0].name}"
    read = cli("verify", url)
    assert read.code == 3, read.err
    assert url in read.err and "permission denied (HTTP 403" in read.err
    out = f"{guarded_env}/merged.tmb"
    write = cli("merge", *tmb_run[:2], "-o", out)
    assert write.code == 7, write.err
    assert out in write.err and "permission denied" in write.err


def test_the_x509_proxy_is_presented_as_client_certificate(
    cli, guarded, guarded_env, tmb_run, monkeypatch
):
    monkeypatch.setenv("X509_USER_PROXY", str(guarded.proxy))
    read = cli("verify", f"{guarded_env}/{tmb_run[0].name}")
    assert read.code == 0, read.err
    write = cli(
        "merge", f"{guarded_env}/{tmb_run[0].name}", tmb_run[1], "-o", f"{guarded_env}/m.tmb"
    )
    assert write.code == 0, write.err


@pytest.mark.parametrize("where", ["BEARER_TOKEN", "BEARER_TOKEN_FILE", "runtime-dir"])
def test_a_bearer_token_opens_the_door(cli, guarded, guarded_env, tmb_run, monkeypatch, where):
    token = guarded.mint_token()
    if where == "BEARER_TOKEN":
        monkeypatch.setenv("BEARER_TOKEN", token)
    elif where == "BEARER_TOKEN_FILE":
        (guarded.folder / "token-file").write_text(token + "\n")
        monkeypatch.setenv("BEARER_TOKEN_FILE", str(guarded.folder / "token-file"))
    else:
        (Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{os.geteuid()}").write_text(token)
    read = cli("verify", f"{guarded_env}/{tmb_run[0].name}")
    assert read.code == 0, read.err
    if where == "BEARER_TOKEN":  # writing too (the discovery itself is the same for both)
        write = cli("merge", *tmb_run[:2], "-o", f"{guarded_env}/m-{where}.tmb")
        assert write.code == 0, write.err


def test_a_forged_token_is_refused(cli, guarded, guarded_env, tmb_run, monkeypatch):
    token = guarded.mint_token()
    forged = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]  # the signature
    monkeypatch.setenv("BEARER_TOKEN", forged)
    url = f"{guarded_env}/{tmb_run[0].name}"
    read = cli("verify", url)
    assert read.code == 3 and url in read.err and "permission denied" in read.err


def run_tmbmerge(*args, **env) -> subprocess.CompletedProcess:
    """The command in a process of its own: the XRootD client authenticates a connection once
    and keeps it for the process, so each credential needs a new one (as each job has)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BEARER_", "X509_USER"))}
    environ.update(PYTHONPATH=str(WORKTREE), TMBMERGE_REMOTE_RETRIES="0", **env)
    return subprocess.run(
        [sys.executable, "-m", "bindings.cli", *map(str, args)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_root_urls_need_the_token_too(guarded, guarded_env, tmb_run, clean_env):
    """root:// on the same server: the XRootD client presents the bearer token (ztn) itself."""
    root = guarded_env.replace(guarded.https_url, guarded.root_url.rstrip("/") + "/")
    url, out = f"{root}/{tmb_run[0].name}", f"{root}/merged-root.tmb"
    staging = {"TMBMERGE_STAGING": str(clean_env / "staging"), "X509_CERT_DIR": str(guarded.ca_dir)}
    refused = run_tmbmerge("verify", url, **staging)
    assert refused.returncode == 3, refused.stderr
    assert url in refused.stderr and "authentication failed" in refused.stderr
    token = guarded.mint_token()
    written = run_tmbmerge("merge", url, tmb_run[1], "-o", out, BEARER_TOKEN=token, **staging)
    assert written.returncode == 0, written.stderr  # read from and written to the server
    assert (guarded.data / guarded_env.rsplit("/", 1)[1] / "merged-root.tmb").exists()
