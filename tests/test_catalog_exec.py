"""The declare-only ``exec:`` catalogue: a site tool gets the metadata on stdin, its exit status
decides."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from catalog_contract import raw, unmerged

from bindings.catalog import DECLARED, open_catalog
from bindings.catalog.exec_tool import ExecCatalog
from bindings.catalog.hook import declare_file
from engine.errors import CatalogError, MetadataError, UsageError
from engine.metadata import write_sidecar

TOOL = r"""
import json, os, sys
metadata = json.load(sys.stdin)
log, behaviour = sys.argv[1], sys.argv[2]
with open(log, "a") as out:
    out.write(json.dumps(metadata) + "\n")
if behaviour == "ok":
    print(4711)
elif behaviour == "quiet":
    print("declared, no id here")
elif behaviour == "refuse":
    print("checking metadata...", file=sys.stderr)
    print("SAM says: parent raw_x.raw unknown", file=sys.stderr)
    sys.exit(3)
elif behaviour == "silent-failure":
    sys.exit(1)
elif behaviour == "kill":
    os.kill(os.getpid(), 9)
elif behaviour == "slow":
    import time; time.sleep(10)
"""


@pytest.fixture
def tool(tmp_path):
    """``url(behaviour)`` names an exec catalogue running the fake site tool; ``calls()`` reads
    what it got."""
    script = tmp_path / "declare tool.py"  # a space in the path: the URL must quote it
    script.write_text(TOOL)
    log = tmp_path / "calls.jsonl"

    class Tool:
        @staticmethod
        def url(behaviour: str) -> str:
            return "exec:" + shlex.join([sys.executable, str(script), str(log), behaviour])

        @staticmethod
        def calls() -> list[dict]:
            return (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )

    return Tool


def test_declare_sends_normalized_metadata_and_reads_the_id(tool):
    catalog = open_catalog(tool.url("ok"))
    md = dict(raw(), file_size=3690769125, checksum=["enstore:1952172898"])
    assert catalog.declare(md) == (md["file_name"], DECLARED, 4711)
    assert tool.calls() == [dict(md, checksum=["adler32:03d6cb63"])]


def test_output_that_is_not_an_id(tool):
    assert open_catalog(tool.url("quiet")).declare(raw()).file_id is None


def test_refusal_reports_the_last_stderr_line(tool):
    with pytest.raises(CatalogError) as caught:
        open_catalog(tool.url("refuse")).declare(raw())
    message = str(caught.value)
    assert message.startswith(f"{raw()['file_name']}: exec: `")
    assert message.endswith("failed (exit status 3): SAM says: parent raw_x.raw unknown")
    assert caught.value.exit_code == 8


def test_failure_without_a_message(tool):
    with pytest.raises(CatalogError, match=r"\(exit status 1\): no message on stderr$"):
        open_catalog(tool.url("silent-failure")).declare(raw())


def test_tool_killed_by_a_signal(tool):
    with pytest.raises(CatalogError, match=r"\(signal 9\)"):
        open_catalog(tool.url("kill")).declare(raw())


def test_tool_that_hangs(tool):
    with pytest.raises(CatalogError, match="did not finish within 0.3 s"):
        open_catalog(tool.url("slow"), timeout=0.3).declare(raw())


def test_missing_command():
    with pytest.raises(CatalogError, match="command not found: /no/such/declare-tool"):
        open_catalog("exec:/no/such/declare-tool --now").declare(raw())


def test_bad_metadata_never_reaches_the_tool(tool):
    with pytest.raises(MetadataError, match="^file_size"):
        open_catalog(tool.url("ok")).declare({"file_name": "x", "file_size": "big"})
    assert tool.calls() == []


@pytest.mark.parametrize(
    "url, words", [("exec:   ", "names no command"), ("exec:'unbalanced", "cannot split")]
)
def test_bad_exec_urls(url, words):
    with pytest.raises(UsageError, match=words):
        open_catalog(url)


def test_command_is_split_like_a_shell_would():
    catalog = open_catalog("exec:sam_declare --experiment 'd zero' -v")
    assert isinstance(catalog, ExecCatalog)
    assert catalog.command == ["sam_declare", "--experiment", "d zero", "-v"]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get("f"),
        lambda c: c.exists("f"),
        lambda c: c.children("f"),
        lambda c: c.parents("f"),
        lambda c: c.files(run=1),
    ],
)
def test_look_ups_are_not_available(call):
    catalog = open_catalog("exec:true")
    with pytest.raises(CatalogError, match="exec catalogues are declare-only: .* is not available"):
        call(catalog)


def test_hook_declares_through_exec_without_checking_parents(tool, tmp_path):
    data = tmp_path / unmerged()["file_name"]
    data.write_bytes(b"x" * 10)
    write_sidecar(data, unmerged(file_size=10))
    result = declare_file(data, open_catalog(tool.url("ok")))
    assert result.status == DECLARED
    assert [call["file_name"] for call in tool.calls()] == [data.name]


def test_hook_cannot_declare_parents_through_exec(tool, tmp_path):
    data = tmp_path / unmerged()["file_name"]
    data.write_bytes(b"x" * 10)
    write_sidecar(data, unmerged(file_size=10))
    with pytest.raises(
        UsageError, match="declare-only catalogue cannot check or declare parents"
    ) as caught:
        declare_file(data, open_catalog(tool.url("ok")), declare_parents=True)
    assert caught.value.exit_code == 2
    assert tool.calls() == []
