"""The command as people outside the project reach it: ``python -m tmbmerge``, ``--version``, package data."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parent.parent


def _python_m(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tmbmerge", *args], env=env, capture_output=True, text=True,
                          timeout=60)


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
    assert "  1 input, 40 events, " in status.out and status.out.endswith("1 output: 1 verified\n")


def test_plan_and_status_explain_themselves(cli):
    for command in ("plan", "status"):
        shown = cli(command, "--help")
        assert shown.code == 0
        description = shown.out.split("\n\n")[1]
        assert len(description) > 100, description     # a description, not only the usage line


def test_campaign_page_templates_are_shipped():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "templates/*.html" in setuptools["package-data"]["bindings.serve"]
    assert sorted(p.name for p in (ROOT / "bindings" / "serve" / "templates").glob("*.html"))
