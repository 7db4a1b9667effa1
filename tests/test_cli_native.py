"""The command as people outside the project reach it: ``python -m tmbmerge``, ``--version``,
package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parent.parent


def _python_m(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tmbmerge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_tmbmerge_is_the_command():
    done = _python_m("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"tmbmerge {engine.__version__}\n"
    done = _python_m("verify", str(ROOT / "tests" / "data" / "golden_v1.tmb"), "--metadata", "none")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK ")


def test_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "engine.__version__"}


def test_py_typed_is_shipped():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in ("engine", "bindings"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in setuptools["package-data"][package]
    assert "tmbmerge*" in setuptools["packages"]["find"]["include"]


def test_counts_take_the_number_of_their_noun(cli, tmb_run, tmp_path):
    merged = cli("merge", tmb_run[0], "-o", tmp_path / "one.tmb")
    assert merged.code == 0, merged.err
    assert ": 1 input, 40 events, " in merged.out
    run = cli("merge-run", tmb_run[0], "--out-dir", tmp_path / "out")
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1].startswith("1 output ready, 0 failures, ")
    status = cli("status", tmp_path / "out")
    assert status.out.endswith("\n1 output: 1 verified\n")


def _table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_status_plan_and_catalog_show_are_tables_that_fit_100_columns(cli, tmb_run, tmp_path):
    """Columns line up, long cells wrap inside their column, no line is longer than 100
    characters or ends in blanks (a pipe or a log file gets the same text)."""
    folder = tmb_run[0].parent
    data = bytearray(tmb_run[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # found while merging: the output fails, with a long error
    tmb_run[1].write_bytes(bytes(data))
    total = sum(p.stat().st_size for p in tmb_run)
    plan = cli("plan", folder, "--target-size", total // 2)
    assert plan.code == 0, plan.err
    rows = _table_rows(plan.out)
    assert rows[0] == ["output", "/", "its", "inputs", "inputs", "events", "size"]
    planned = json.loads(cli("plan", folder, "--target-size", total // 2, "--json").out)["outputs"]
    first = planned[0]
    count = len(first["inputs"])
    assert rows[1][:3] == [first["output"], str(count), str(first["event_count"])]
    assert [r[0] for r in rows[2 : 2 + count]] == [p.name for p in tmb_run[:count]]
    assert rows[2][1] == "40"  # each input's events
    assert rows[2 + count][0] == planned[1]["output"]
    out = tmp_path / "out"
    run = cli("merge-run", folder, "--out-dir", out, "--target-size", total // 2)
    assert run.code == 5
    status = cli("status", out)
    rows = _table_rows(status.out)
    assert rows[0] == ["state", "output", "inputs", "events", "size", "checksum"]
    states = {row[1]: row[0] for row in rows[1:] if row[0] in ("failed", "verified")}
    assert states == {
        o["output"]: "failed" if tmb_run[1].name in str(o["inputs"]) else "verified"
        for o in planned
    }
    assert "error:" in status.out and str(tmb_run[1].name) in status.out
    show_url = f"sqlite:///{tmp_path / 'show.db'}"
    assert cli("catalog", "import", folder, "--catalog", show_url, "--declare-parents").code == 0
    show = cli("catalog", "show", tmb_run[0].name, "--catalog", show_url)
    assert _table_rows(show.out)[0] == ["file_name", tmb_run[0].name]
    for text in (plan.out, status.out, show.out):
        assert max(len(line) for line in text.splitlines()) <= 100
        assert all(line == line.rstrip() for line in text.splitlines())
    assert max(len(line) for line in status.out.splitlines()) > 90  # the error was wrapped


def test_plan_and_status_explain_themselves(cli):
    for command in ("plan", "status"):
        shown = cli(command, "--help")
        assert shown.code == 0
        description = shown.out.split("\n\n")[1]
        assert len(description) > 100, description  # a description, not only the usage line


def test_hadd_form_target_first(cli, tmb_run, tmp_path, read_event_list):
    target = tmp_path / "merged.tmb"
    result = cli("hadd", target, *tmb_run)
    assert result.code == 0, result.err
    assert read_event_list(target) == [e for p in tmb_run for e in read_event_list(p)]
    assert cli("hadd", target, *tmb_run).code == 7  # exists: hadd's -f needed
    for force in ("-f", "-ff", "-fk", "-f6"):
        assert cli("hadd", force, target, *tmb_run[:2]).code == 0, force
    # -fk is hadd's "overwrite, keep the compression": it does not also mean -k
    data = bytearray(tmb_run[3].read_bytes())
    data[len(data) // 2] ^= 0xFF
    tmb_run[3].write_bytes(bytes(data))
    assert cli("hadd", "-fk", target, *tmb_run).code == 5
    skipped = cli("hadd", "-f", "-k", "-j", "1", target, *tmb_run, "--json")
    assert skipped.code == 0, skipped.err
    assert [s["file"] for s in skipped.json()["skipped"]] == [str(tmb_run[3])]


def test_short_flags_of_merge(cli, tmb_run, tmp_path):
    output = tmp_path / "out.tmb"
    assert cli("merge", "-j", "1", *tmb_run, "-o", output).code == 0
    assert cli("merge", *tmb_run, "-o", output).code == 7
    assert cli("merge", "-f", "-k", *tmb_run, "-o", output).code == 0
    assert (ROOT / "docs" / "HADD.md").is_file()


def test_campaign_page_templates_are_shipped():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "templates/*.html" in setuptools["package-data"]["bindings.serve"]
    assert sorted(p.name for p in (ROOT / "bindings" / "serve" / "templates").glob("*.html"))
