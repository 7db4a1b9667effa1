"""Outputs staged out to remote storage (a real xrootd, root:// and https://): written and verified
locally, uploaded under a temporary name, checked by the server's adler32, renamed into place;
and what a failed stage-out leaves behind: nothing at the final name, no temporary, no staging."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_event_list
from remote_servers import CuttingProxy, XrootdServer

WORKTREE = Path(__file__).resolve().parents[1]


@pytest.fixture
def staging(monkeypatch, tmp_path):
    folder = tmp_path / "staging"
    monkeypatch.setenv("TMBMERGE_STAGING", str(folder))
    return folder


def server_folder(server, name: str) -> Path:
    folder = server.data / name
    folder.mkdir(parents=True, exist_ok=True)
    return server.owned_by_server(folder)


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("scheme", ["root", "https"])
def test_merge_output_is_staged_out_verified(cli, remote_env, staging, tmb_run, tmp_path, scheme):
    folder = server_folder(remote_env, f"out-{scheme}")
    base = (
        f"{remote_env.root_url}/out-{scheme}"
        if scheme == "root"
        else f"{remote_env.https_url}/out-{scheme}"
    )
    result = cli("merge", *map(str, tmb_run[:3]), "-o", f"{base}/m.tmb", "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["output"] == f"{base}/m.tmb" and report["verified"]
    assert all_files(folder) == ["m.tmb", "m.tmb.json"]  # no temporary left beside it
    assert read_event_list(folder / "m.tmb") == [e for p in tmb_run[:3] for e in read_event_list(p)]
    sidecar = json.loads((folder / "m.tmb.json").read_text())
    assert sidecar["file_name"] == "m.tmb" and sidecar["checksum"] == [report["checksum"]]
    assert list(staging.rglob("*.tmb*")) == []  # the staging copy is gone
    again = cli("merge", *map(str, tmb_run[:3]), "-o", f"{base}/m.tmb")
    assert again.code == 7 and "exists" in again.err and f"{base}/m.tmb" in again.err
    replaced = cli("merge", *map(str, tmb_run[:2]), "-o", f"{base}/m.tmb", "--force")
    assert replaced.code == 0, replaced.err
    assert len(read_event_list(folder / "m.tmb")) == sum(
        len(read_event_list(p)) for p in tmb_run[:2]
    )


def test_default_staging_leaves_nothing_in_tmpdir(cli, remote_env, tmb_run, tmp_path, monkeypatch):
    """Without $TMBMERGE_STAGING the staging folder is made under $TMPDIR, and removed with the
    last staged output: a stage-out, successful or refused, leaves $TMPDIR as it found it."""
    import tempfile

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.delenv("TMBMERGE_STAGING", raising=False)
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # gettempdir() caches $TMPDIR
    url = f"{remote_env.root_url}/{server_folder(remote_env, 'tmpdir-out').name}/m.tmb"
    assert cli("merge", *map(str, tmb_run[:2]), "-o", url, "--quiet").code == 0
    assert list(scratch.iterdir()) == []
    assert cli("merge", *map(str, tmb_run[:2]), "-o", url, "--quiet").code == 7  # exists: refused
    assert list(scratch.iterdir()) == []


def test_wrong_checksum_from_the_server_leaves_nothing(
    cli, remote_env, staging, tmb_run, monkeypatch
):
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"tmbmerge-liar-{os.getpid()}.sh"
    script.write_text("#!/bin/sh\necho 00000001\n")
    script.chmod(0o755)
    server = XrootdServer(checksum_program=str(script), name="liar")
    monkeypatch.setenv("X509_CERT_DIR", str(server.ca_dir))
    try:
        folder = server_folder(server, "out")
        for url in (f"{server.root_url}/out/m.tmb", f"{server.https_url}/out/h.tmb"):
            result = cli("merge", *map(str, tmb_run[:2]), "-o", url)
            assert result.code == 7, result.err
            assert url in result.err and "adler32" in result.err and "00000001" in result.err
        assert all_files(folder) == []
    finally:
        server.remove()
        script.unlink()


@pytest.mark.parametrize("scheme", ["root", "https"])
def test_connection_dropped_mid_upload_leaves_nothing(remote_env, staging, tmb_big_run, scheme):
    server = XrootdServer(name="dropped")
    try:
        folder = server_folder(server, "out")
        port = server.root_port if scheme == "root" else server.https_port
        proxy = CuttingProxy(port, limit=4 << 20, direction="up")
        inputs = [str(p) for p in sorted(tmb_big_run.glob("*.tmb"))[:4]]
        env = {
            **os.environ,
            "PYTHONPATH": str(WORKTREE),
            "TMBMERGE_REMOTE_TIMEOUT": "5",
            "TMBMERGE_REMOTE_RETRIES": "1",
            "TMBMERGE_REMOTE_BACKOFF": "0.1",
            "X509_CERT_DIR": str(server.ca_dir),
        }
        url = proxy.url("out/m.tmb", scheme)
        result = subprocess.run(
            [sys.executable, "-m", "bindings.cli", "merge", *inputs, "-o", url, "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 7, result.stderr
        assert proxy.cuts >= 2  # the upload was tried again, and cut again
        assert url in result.stderr and "upload failed" in result.stderr
        deadline = time.monotonic() + 15  # the server drops an unfinished upload (POSC)
        while all_files(folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all_files(folder) == []
        assert list(staging.rglob("*.tmb*")) == []
    finally:
        server.remove()


def test_permission_denied_on_the_output_folder_is_exit_7(cli, remote_env, staging, tmb_run):
    folder = remote_env.data / "locked"
    folder.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(folder, 0, 0)  # the server runs as nobody: not its folder
    folder.chmod(
        stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    )
    for url in (f"{remote_env.root_url}/locked/m.tmb", f"{remote_env.https_url}/locked/m.tmb"):
        result = cli("merge", *map(str, tmb_run[:2]), "-o", url)
        assert result.code == 7, result.err
        assert url in result.err and "Traceback" not in result.err
    assert all_files(folder) == []


def test_merge_run_to_remote_storage_declares_and_retires_after_stage_out(
    cli, remote_env, staging, tmb_run, tmp_path
):
    for path in tmb_run:
        remote_env.put(path, "run-retire")
    inputs = f"{remote_env.root_url}/run-retire/"
    out = f"{remote_env.root_url}/merged-retire/"
    catalog = f"sqlite:///{tmp_path / 'cat.db'}"
    imported = cli("catalog", "import", inputs, "--catalog", catalog, "--declare-parents")
    assert imported.code == 0, imported.err
    result = cli(
        "merge-run",
        inputs,
        "--out-dir",
        out,
        "--catalog",
        catalog,
        "--declare",
        "--retire-inputs",
        "--json",
    )
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    assert output["declared"] == "declared" and len(output["retired"]) == len(tmb_run)
    merged = remote_env.data / "merged-retire"
    assert all_files(merged) == [
        output["output"].rsplit("/", 1)[1],
        output["output"].rsplit("/", 1)[1] + ".json",
    ]
    assert read_event_list(next(merged.glob("*.tmb"))) == [
        e for p in tmb_run for e in read_event_list(p)
    ]
    assert all_files(remote_env.data / "run-retire") == sorted(
        f"retired/{p.name}{s}" for p in tmb_run for s in ("", ".json")
    )
    status = cli("status", out)
    assert status.code == 0 and "retired" in status.out


def test_a_remote_merge_runs_journal_outlives_the_staging_folder(
    cli, remote_env, staging, tmb_run, tmp_path
):
    """The journal of a merge-run into remote storage is local state kept where a reboot does
    not clear it ($XDG_STATE_HOME/tmbmerge/runs, or --journal DIR), not in the staging folder
    under $TMPDIR: a rerun after the staging folder is gone finds its outputs finished."""
    for path in tmb_run:
        remote_env.put(path, "run-journal")
    inputs = f"{remote_env.root_url}/run-journal/"
    out = f"{remote_env.root_url}/merged-journal/"
    first = cli("merge-run", inputs, "--out-dir", out, "--json")
    assert first.code == 0, first.err
    [output] = first.json()["outputs"]
    runs = tmp_path / "state" / "tmbmerge" / "runs"
    [journal] = runs.glob("*merged-journal*/.tmbmerge-journal.sqlite")
    shutil.rmtree(staging, ignore_errors=True)  # what a reboot does to $TMPDIR
    again = cli("merge-run", inputs, "--out-dir", out, "--json")
    assert again.code == 0, again.err
    [resumed] = again.json()["outputs"]
    assert resumed["output"] == output["output"] and resumed["status"].startswith("already ")
    assert cli("status", out).code == 0

    jobs = tmp_path / "jobs"  # --journal DIR: the same, under a folder of the user's choosing
    out2 = f"{remote_env.root_url}/merged-journal-2/"
    chosen = cli("merge-run", inputs, "--out-dir", out2, "--journal", jobs, "--quiet")
    assert chosen.code == 0, chosen.err
    assert list(jobs.glob("*merged-journal-2*/.tmbmerge-journal.sqlite"))
    status = cli("status", out2, "--journal", jobs)
    assert status.code == 0 and "verified" in status.out
    assert cli("status", out2).code == 3  # not under the default folder
    local = cli("merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "o", "--journal", jobs)
    assert local.code == 2 and "a local output folder keeps its journal in itself" in local.err


@pytest.mark.parametrize("scheme", ["https", "root"])
def test_a_killed_stage_out_leaves_a_temporary_the_next_one_removes(
    cli, remote_env, staging, tmb_big_run, scheme
):
    """kill -9 in the middle of an upload: nothing can remove the server's partial file then
    (over root:// too: the server keeps a persist-on-close file for the client to come back);
    its name (host, pid) tells the next stage-out of the same output that its writer is dead."""
    folder = server_folder(remote_env, f"out-killed-{scheme}")
    port = remote_env.https_port if scheme == "https" else remote_env.root_port
    proxy = CuttingProxy(port, limit=1 << 20, direction="up", stall=True)
    inputs = [str(p) for p in sorted(tmb_big_run.glob("*.tmb"))[:4]]
    env = {
        **os.environ,
        "PYTHONPATH": str(WORKTREE),
        "TMBMERGE_REMOTE_TIMEOUT": "60",
        "X509_CERT_DIR": str(remote_env.ca_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bindings.cli", "merge", *inputs, "-o"]
        + [proxy.url(f"out-killed-{scheme}/m.tmb", scheme), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not proxy.cuts and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.cuts == 1, "the upload never reached the stall"
        process.kill()  # SIGKILL: no cleanup of any kind runs
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        proxy.close()
    left = [name for name in all_files(folder) if ".tmbupload-" in name]
    assert left and all(name.startswith(".m.tmb.tmbupload-") for name in left), all_files(folder)
    assert f"-{process.pid}-" in left[0]
    assert "m.tmb" not in all_files(folder)  # (its sidecar was placed first: it describes nothing)
    server = remote_env.https_url if scheme == "https" else remote_env.root_url
    url = f"{server}/out-killed-{scheme}/m.tmb"
    again = cli("merge", *inputs, "-o", url)
    assert again.code == 0, again.err
    assert all_files(folder) == ["m.tmb", "m.tmb.json"]  # the dead one's temporary is gone


def test_xrootd_placement_never_replaces_a_file_placed_meanwhile(remote_env):
    """kXR_mv replaces its target; placing an upload claims the final name first with an
    exclusive create, so of writers racing for one name exactly one wins and no placed file is
    ever replaced (a stat before the move would let both pass it)."""
    import threading

    from engine.remote import location
    from engine.remote.retry import RemoteFailure
    from engine.remote.xrootd import rename

    folder = server_folder(remote_env, "race")
    base = f"{remote_env.root_url}/race"
    for round_ in range(6):
        for writer in (0, 1):
            (folder / f"up-{round_}-{writer}").write_text(f"writer {writer}")
        remote_env.owned_by_server(folder)
    outcomes: dict = {}
    start = threading.Barrier(2)

    def place(round_, writer):
        start.wait()
        try:
            rename(location(f"{base}/up-{round_}-{writer}"), location(f"{base}/final-{round_}"))
            outcomes[round_, writer] = "placed"
        except RemoteFailure as failure:
            outcomes[round_, writer] = failure.message

    for round_ in range(6):
        threads = [threading.Thread(target=place, args=(round_, w)) for w in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        results = sorted(outcomes[round_, w] for w in (0, 1))
        assert results == ["destination exists", "placed"], results
        winner = 0 if outcomes[round_, 0] == "placed" else 1
        assert (folder / f"final-{round_}").read_text() == f"writer {winner}"
        assert (folder / f"up-{round_}-{1 - winner}").exists()  # the loser's upload, untouched
