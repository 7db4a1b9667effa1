"""Errors of the outside world are documented errors naming the file, never "internal error".

Issue 10: a full disk while writing an output or the journal, a read-only output folder, an
output folder that cannot be created, an unreachable Dask scheduler and a damaged catalogue
all ended in exit 1 "internal error"; one output failing so aborted the whole merge-run, the
other outputs left "merging" in the journal and no summary.  Root ignores permissions, so full
and read-only places are simulated where the operating system would say so: ``os.write`` /
``os.open`` fail with ENOSPC / EROFS for the paths of the output folder only.
"""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from engine.merge import plan_run

TARGET_OUTPUTS = 3


def _target(paths) -> int:
    sizes = sorted(p.stat().st_size for p in paths)
    return sizes[-1] + sizes[-2] + sizes[0] // 2  # 3 outputs of 2 inputs


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture
def full_disk_for(monkeypatch):
    """``full_disk_for(marker)``: every write to a file whose path holds ``marker`` fails with
    ENOSPC."""
    real_write = os.write

    def install(marker: str):
        def write(fd, data):
            if marker in _fd_path(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)

    return install


def test_full_disk_writing_a_merge_output_is_an_output_error(
    cli, tmb_run, tmp_path, full_disk_for, leftovers
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    full_disk_for(str(out_dir))
    result = cli("merge", *tmb_run[:2], "-o", out_dir / "m.tmb")
    assert result.code == 7, result.err
    assert "internal error" not in result.err
    assert f"{out_dir / 'm.tmb'}: cannot write: No space left on device" in result.err
    assert sorted(os.listdir(out_dir)) == []


def test_one_output_failing_of_a_full_disk_does_not_stop_merge_run(
    cli, tmb_run, tmp_path, full_disk_for, leftovers
):
    folder = tmb_run[0].parent
    target = _target(tmb_run)
    plan = plan_run([folder], target_size=target)
    assert len(plan.outputs) == TARGET_OUTPUTS
    broken = plan.outputs[1].name
    full_disk_for(broken)
    out_dir = tmp_path / "out"
    result = cli(
        "merge-run", folder, "--out-dir", out_dir, "--target-size", target, "--jobs", 1, "--json"
    )
    assert result.code == 7, result.err
    report = result.json()
    assert [f["output"] for f in report["failures"]] == [broken]
    assert "No space left on device" in report["failures"][0]["message"]
    assert sorted(p.name for p in out_dir.glob("*.tmb")) == sorted(
        o.name for o in plan.outputs if o.name != broken
    )
    summary = cli("status", out_dir, "--json").json()["summary"]
    assert summary == {"failed": 1, "verified": 2}
    assert leftovers(out_dir) == []


def test_a_bug_in_one_output_is_recorded_and_the_others_go_on(cli, tmb_run, tmp_path, monkeypatch):
    """Even an exception that is no EngineError (a bug) fails only its own output: journaled,
    summed up."""
    from engine.merge import run as run_module

    folder = tmb_run[0].parent
    target = _target(tmb_run)
    broken = plan_run([folder], target_size=target).outputs[0].name
    real = run_module.merge_files

    def merge_files(inputs, output, *args, **kwargs):
        if str(output).endswith(broken):
            raise RuntimeError("simulated bug")
        return real(inputs, output, *args, **kwargs)

    monkeypatch.setattr(run_module, "merge_files", merge_files)
    out_dir = tmp_path / "out"
    result = cli(
        "merge-run", folder, "--out-dir", out_dir, "--target-size", target, "--jobs", 1, "--json"
    )
    assert result.code == 1, result.err
    failures = result.json()["failures"]
    assert [f["output"] for f in failures] == [broken]
    assert "internal error: RuntimeError: simulated bug" in failures[0]["message"]
    assert cli("status", out_dir, "--json").json()["summary"] == {"failed": 1, "verified": 2}


def test_output_folder_that_cannot_be_created(cli, tmb_run, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    result = cli("merge-run", tmb_run[0].parent, "--out-dir", in_the_way / "merged")
    assert result.code == 7, result.err
    assert (
        f"{in_the_way / 'merged'}: cannot create the output folder: Not a directory" in result.err
    )


def test_read_only_output_folder(cli, tmb_run, tmp_path, monkeypatch):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(out_dir)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    for args in (
        ("merge", *tmb_run[:2], "-o", out_dir / "m.tmb"),
        ("merge-run", tmb_run[0].parent, "--out-dir", out_dir),
    ):
        result = cli(*args)
        assert result.code == 7, result.err
        assert "Read-only file system" in result.err and str(out_dir) in result.err
    assert sorted(os.listdir(out_dir)) == []


def test_full_disk_writing_the_journal(cli, tmb_run, tmp_path, monkeypatch):
    from engine.merge import journal as journal_module

    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, db):
            self._db = db

        def execute(self, sql, *args):
            if sql.startswith("UPDATE outputs"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._db, name)

        def __enter__(self):
            return self._db.__enter__()

        def __exit__(self, *exc):
            return self._db.__exit__(*exc)

    monkeypatch.setattr(
        journal_module.sqlite3, "connect", lambda *a, **k: FullDisk(real_connect(*a, **k))
    )
    out_dir = tmp_path / "out"
    result = cli("merge-run", tmb_run[0].parent, "--out-dir", out_dir)
    assert result.code == 7, result.err
    assert (
        f"{out_dir / '.tmbmerge-journal.sqlite'}: cannot write the merge-run journal: database "
        "or disk is full" in result.err
    )


def test_unreachable_dask_scheduler(cli, tmb_run, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from engine.merge import executors

    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT", "1s")
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--executor",
        "dask://127.0.0.1:9",
    )
    assert result.code == 7, result.err
    assert "cannot reach the Dask scheduler at 127.0.0.1:9" in result.err


def test_damaged_sqlite_catalogue_schema(cli, tmp_path):
    from bindings.catalog.sqlite import SqliteCatalog

    path = tmp_path / "cat.db"
    SqliteCatalog(path).close()
    data = bytearray(path.read_bytes())
    at = data.find(b"CREATE TABLE")
    data[at + 7 : at + 9] = b"\xff\xfe"  # undecodable text in the schema
    path.write_bytes(bytes(data))
    result = cli("catalog", "run", "1", "--catalog", f"sqlite:///{path}")
    assert result.code == 8, result.err
    assert f"{path}: catalogue database error" in result.err and "internal error" not in result.err


def test_an_os_error_escaping_a_command_is_named_not_a_bug(cli, tmp_path, monkeypatch):
    """The command line's last net: an OSError no layer translated still exits 3 or 7, naming the
    file."""
    import engine.verify

    def explode(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where")

    monkeypatch.setattr(engine.verify, "verify_files", explode)
    result = cli("verify", tmp_path / "x.tmb")
    assert result.code == 3, result.err
    assert "error: /some/where: cannot use this path: Permission denied" in result.err
