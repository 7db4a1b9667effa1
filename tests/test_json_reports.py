"""Every reporting command has ``--json``, with the top-level shape the README's "JSON reports"
table gives it (tests/json_shapes.py reads the table); ``bench`` and ``spec`` are held to it by
their own tests (test_benchmark_cli.py, test_benchmark_report.py)."""

from __future__ import annotations

import argparse
import json

import pytest
from json_shapes import assert_documented, documented_shapes

from bindings.cli import build_parser

ERROR_KEYS = {"error", "message", "text", "exit_code"}
ERROR_OPTIONAL = {"path", "region", "offset", "expected", "actual"}


def _leaf_commands(parser, prefix=()):
    """Every command that does one thing (``serve``, which serves a page and reports nothing, is
    a group: its ``dataset`` and ``token`` actions are its leaves)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _leaf_commands(sub, (*prefix, name))
                else:
                    yield " ".join((*prefix, name)), sub


def test_every_command_has_json_and_a_documented_shape():
    shapes = documented_shapes()
    for command, parser in _leaf_commands(build_parser()):
        options = {o for action in parser._actions for o in action.option_strings}
        assert "--json" in options, command
        assert command in shapes, f"README's JSON reports table has no row for {command}"


@pytest.fixture
def catalogued(cli, tmb_run, tmp_path):
    """tmb_run imported into a sqlite catalogue (its raw parents as placeholders)."""
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    result = cli(
        "catalog", "import", tmb_run[0].parent, "--catalog", url, "--declare-parents", "--json"
    )
    assert result.code == 0, result.err
    assert_documented("catalog import", json.loads(result.out))
    return url


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_file_commands(cli, tmb_run, tmp_path):
    assert_documented("dump", _json(cli("dump", tmb_run[0], "--json")))
    assert_documented("dump", _json(cli("dump", tmb_run[0], "--json", "--events")))
    assert_documented("verify", _json(cli("verify", *tmb_run, "--json")))
    generated = _json(
        cli("generate", tmp_path / "gen", "--files", "2", "--events-per-file", "5", "--json")
    )
    assert_documented("generate", generated)


def test_a_failed_verify_has_the_error_object(cli, tmb_run):
    data = bytearray(tmb_run[0].read_bytes())
    data[:4] = b"NOPE"
    tmb_run[0].write_bytes(bytes(data))
    result = cli("verify", tmb_run[0], "--json")
    report = json.loads(result.out)
    assert_documented("verify", report)
    assert ERROR_KEYS <= set(report[0]["error"]) <= ERROR_KEYS | ERROR_OPTIONAL
    assert result.code == report[0]["error"]["exit_code"] == 5  # a damaged magic, digest intact


def test_merge_commands(cli, tmb_run, tmp_path):
    assert_documented("merge", _json(cli("merge", *tmb_run, "-o", tmp_path / "m.tmb", "--json")))
    assert_documented("hadd", _json(cli("hadd", tmp_path / "h.tmb", *tmb_run, "--json")))
    folder = tmb_run[0].parent
    assert_documented("plan", _json(cli("plan", folder, "--json")))
    out = tmp_path / "out"
    assert_documented(
        "merge-run", _json(cli("merge-run", folder, "--out-dir", out, "-j", "1", "--json"))
    )
    assert_documented("status", _json(cli("status", out, "--json")))


def test_catalogue_commands(cli, catalogued, tmb_run, tmp_path):
    name = tmb_run[0].name
    assert_documented(
        "catalog show", _json(cli("catalog", "show", name, "--catalog", catalogued, "--json"))
    )
    for command, argument in (("run", 178000), ("parents", name)):
        names = _json(cli("catalog", command, argument, "--catalog", catalogued, "--json"))
        assert_documented(f"catalog {command}", names)
    merged = tmp_path / "m.tmb"
    assert cli("merge", *tmb_run, "-o", merged, "--catalog", catalogued).code == 0
    declared = _json(cli("declare", merged, "--catalog", catalogued, "--json"))
    assert_documented("declare", declared)
    assert declared["catalog"]["requests"] > 0
    children = _json(cli("catalog", "children", name, "--catalog", catalogued, "--json"))
    assert_documented("catalog children", children)
    certified = _json(cli("certify", tmb_run[0].parent, "--catalog", catalogued, "--json"))
    assert_documented("certify", certified)


def test_campaign_page_commands(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'campaign.db'}"
    added = _json(cli("serve", "dataset", "add", "d1", "--runs", "1-2", "--catalog", url, "--json"))
    assert_documented("serve dataset add", added)
    assert_documented(
        "serve dataset list", _json(cli("serve", "dataset", "list", "--catalog", url, "--json"))
    )
    listed = cli("serve", "dataset", "list", "--catalog", url)
    assert [line.split() for line in listed.out.splitlines()] == [
        ["dataset", "runs", "state", "site"],
        ["d1", "1-2", "open"],
    ]
    token = _json(cli("serve", "token", "add", "cnaf", "--catalog", url, "--json"))
    assert_documented("serve token add", token)
    assert token["site"] == "cnaf" and token["token"].startswith("tmbs_")


def test_a_command_that_fails_before_its_report_prints_the_error_object(cli, tmp_path):
    missing = tmp_path / "missing.tmb"
    result = cli("merge", missing, "-o", tmp_path / "m.tmb", "--json")
    assert result.code == 3
    error = json.loads(result.out)
    assert ERROR_KEYS <= set(error) <= ERROR_KEYS | ERROR_OPTIONAL
    assert error["exit_code"] == 3 and error["path"] == str(missing)
    assert result.err == f"tmbmerge: error: {error['text']}\n"


def test_an_interrupted_command_says_what_it_left(cli, tmb_run, tmp_path, monkeypatch):
    import engine.merge
    from engine.errors import Interrupted

    def interrupted(inputs, output, *args, **kwargs):
        raise Interrupted("interrupted by SIGTERM", published=[str(output)])

    monkeypatch.setattr(engine.merge, "merge_files", interrupted)
    result = cli("merge", *tmb_run, "-o", tmp_path / "m.tmb", "--json")
    assert result.code == 130
    report = json.loads(result.out)
    assert ERROR_KEYS <= set(report) and report["error"] == "Interrupted"
    assert report["published"] == [str(tmp_path / "m.tmb")] and report["not_published"] == []
    assert result.err == f"tmbmerge: error: {report['text']}\n"
