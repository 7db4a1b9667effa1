"""Hostile metadata: embedded JSON and sidecars that tried to crash, hang or fool every command.

Issue 10's findings, each a test: JSON that ``json.loads`` cannot handle (nesting 1,000 deep,
a 5,000-digit integer, a lone surrogate, NaN) in the file's own metadata or in its sidecar;
a huge ``partition``; sidecars that are FIFOs (hung every command), symlinks to ``/dev/zero``
(memory until MemoryError) or just huge; sidecar fields never compared with the file
(``runs``, ``first_event``, ``last_event``); an unknown field that ``verify`` let pass and
``merge`` refused.  Each must be one line naming the file, with its documented exit code.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fuzz.forge import assemble, dissect

from engine.errors import MetadataError
from engine.metadata import MAX_SIDECAR_BYTES, read_sidecar, sidecar_path
from engine.readers import open_file

HOSTILE_JSON = {
    "nested 1000 deep": "[" * 1000 + "]" * 1000,
    "nested 40 deep": '{"a":' * 40 + "1" + "}" * 40,
    "5000-digit integer": '{"file_name": "x", "event_count": ' + "9" * 5000 + "}",
    "lone surrogate": '{"file_name": "x", "data_tier": "\\ud800"}',
    "NaN": '{"file_name": "x", "Merge.x": NaN}',
    "not UTF-8": b'{"file_name": "\xff"}',
}


def _text(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@pytest.fixture
def one(tmb_run, tmp_path):
    """One input in a folder of its own, with its sidecar."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in (tmb_run[0], sidecar_path(tmb_run[0])):
        shutil.copy(path, folder / path.name)
    return folder / tmb_run[0].name


def _commands(path, tmp_path):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return {
        "verify": ("verify", path),
        "verify --deep": ("verify", "--deep", path),
        "merge": ("merge", path, "-o", out / "m.tmb"),
        "merge-run": ("merge-run", path.parent, "--out-dir", out / "run"),
        "plan": ("plan", path.parent),
    }


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_embedded_metadata(cli, one, tmp_path, name):
    parts = dissect(one)
    parts.metadata = _text(HOSTILE_JSON[name])
    one.write_bytes(assemble(parts))
    with pytest.raises(MetadataError) as refused:
        open_file(one)
    assert refused.value.path == str(one) and refused.value.region == "metadata"
    for command, args in {**_commands(one, tmp_path), "dump": ("dump", one)}.items():
        result = cli(*args)
        assert result.code == 4, (command, result.err)
        assert f"{one}: metadata" in result.err and "internal error" not in result.err, (
            command,
            result.err,
        )


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_sidecar_json(cli, one, tmp_path, name, url):
    sidecar = sidecar_path(one)
    sidecar.write_bytes(_text(HOSTILE_JSON[name]))
    with pytest.raises(MetadataError):
        read_sidecar(one)
    commands = {
        k: v for k, v in _commands(one, tmp_path).items() if k != "plan"
    }  # plan reads no sidecar
    commands["catalog import"] = ("catalog", "import", one.parent, "--catalog", url)
    for command, args in commands.items():
        result = cli(*args)
        assert result.code == 4, (command, result.err)
        assert str(sidecar) in result.err and "internal error" not in result.err, (
            command,
            result.err,
        )


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def test_huge_partition_in_the_metadata_is_refused(cli, one, tmp_path):
    parts = dissect(one)
    md = json.loads(parts.metadata)
    md["partition"] = 10**39
    parts.metadata = json.dumps(md).encode()
    one.write_bytes(assemble(parts))
    for args in (("plan", one.parent), ("merge-run", one.parent, "--out-dir", tmp_path / "out")):
        result = cli(*args)
        assert result.code == 4, result.err
        assert f"{one}: metadata: partition: {10**39} is out of range" in result.err


@pytest.mark.timeout(60)
def test_fifo_sidecar_never_hangs(cli, one, tmp_path):
    sidecar = sidecar_path(one)
    sidecar.unlink()
    os.mkfifo(sidecar)
    for command, args in _commands(one, tmp_path).items():
        if command == "plan":
            continue
        result = cli(*args)
        assert result.code == 3, (command, result.err)
        assert f"{sidecar}: sidecar is a FIFO, not a regular file" in result.err


def test_sidecar_symlinked_to_dev_zero(cli, one, tmp_path):
    sidecar = sidecar_path(one)
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")
    result = cli("verify", one)
    assert result.code == 3, result.err
    assert f"{sidecar}: sidecar is a device, not a regular file" in result.err


def test_oversized_sidecar_is_refused_before_it_is_read(cli, one, monkeypatch):
    sidecar = sidecar_path(one)
    md = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(md) + " " * MAX_SIDECAR_BYTES)
    reads = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    result = cli("verify", one)
    assert result.code == 4, result.err
    assert (
        f"{sidecar}: sidecar is {MAX_SIDECAR_BYTES + len(json.dumps(md))} bytes, more than"
        in result.err
    )
    assert reads == []


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "runs",
            [[999, 0, "physics"]],
            "runs differ from the sidecar (expected 999, found 178000)",
        ),
        ("first_event", "+1", "first_event differs from the sidecar (expected 2, found 1)"),
        ("last_event", 10**12, "last_event differs from the sidecar"),
    ],
)
def test_sidecar_facts_the_file_also_knows_are_compared(
    cli, one, tmp_path, url, field, value, message
):
    sidecar = sidecar_path(one)
    md = json.loads(sidecar.read_text())
    md[field] = md[field] + 1 if value == "+1" else value
    sidecar.write_text(json.dumps(md))
    commands = {k: v for k, v in _commands(one, tmp_path).items() if k != "plan"}
    commands["catalog import"] = ("catalog", "import", one.parent, "--catalog", url)
    for command, args in commands.items():
        result = cli(*args)
        assert result.code == 6, (command, result.err)
        assert message in result.err, (command, result.err)


def test_unknown_sidecar_field_is_refused_by_verify_and_merge_alike(cli, one, tmp_path):
    sidecar = sidecar_path(one)
    md = json.loads(sidecar.read_text())
    md["event_cout"] = md["event_count"]
    sidecar.write_text(json.dumps(md))
    for command, args in _commands(one, tmp_path).items():
        if command == "plan":
            continue
        result = cli(*args)
        assert result.code == 4, (command, result.err)
        assert f"{sidecar}: event_cout: not a SAM metadata field" in result.err, (
            command,
            result.err,
        )
