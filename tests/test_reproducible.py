"""Byte-reproducible merges: the same inputs and options give the same output and sidecar, byte for
byte."""

from __future__ import annotations

import pytest

from engine import open_file


def _merge_twice(cli, tmb_run, tmp_path, *options):
    outputs = []
    for attempt in ("first", "second"):
        folder = tmp_path / attempt
        folder.mkdir()
        output = folder / "tmb_0000178000_mrg_p000-p005.tmb"
        result = cli("merge", *tmb_run, "-o", output, "--quiet", *options)
        assert result.code == 0, result.err
        outputs.append(output)
    return outputs


@pytest.mark.parametrize("mode", ["fast", "safe"])
def test_reproducible_merges_are_byte_identical(cli, tmb_run, tmp_path, monkeypatch, mode):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first, second = _merge_twice(cli, tmb_run, tmp_path, "--reproducible", "--mode", mode)
    assert first.read_bytes() == second.read_bytes()
    assert (
        first.with_name(first.name + ".json").read_bytes()
        == second.with_name(second.name + ".json").read_bytes()
    )
    with open_file(first) as reader, open_file(tmb_run[-1]) as newest:
        # the timestamp is the inputs' own (the newest input's creation time), not the clock's
        assert reader.metadata["created"] == newest.metadata["created"]


def test_source_date_epoch_fixes_every_timestamp(cli, tmb_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, second = _merge_twice(cli, tmb_run, tmp_path)
    assert first.read_bytes() == second.read_bytes()
    sidecar = first.with_name(first.name + ".json")
    assert sidecar.read_bytes() == second.with_name(second.name + ".json").read_bytes()
    assert '"start_time": "2023-11-14T22:13:20+00:00"' in sidecar.read_text()
    with open_file(first) as reader:
        assert reader.metadata["created"] == "2023-11-14T22:13:20+00:00"


def test_file_id_follows_content(cli, tmb_run, tmp_path, monkeypatch):
    """The UUID is derived from what the merge writes: the same merge gives the same id, another
    mode or other inputs another (without SOURCE_DATE_EPOCH or --reproducible, the clock's time
    decides)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ids = {}
    for name, options in {
        "safe": [],
        "safe again": [],
        "fast": ["--mode", "fast"],
        "fewer": [],
    }.items():
        output = tmp_path / name.replace(" ", "_") / "out.tmb"
        output.parent.mkdir()
        inputs = tmb_run[:-1] if name == "fewer" else tmb_run
        assert cli("merge", *inputs, "-o", output, "--quiet", *options).code == 0
        with open_file(output) as reader:
            ids[name] = reader.uuid
    assert ids["safe"] == ids["safe again"]
    assert len({ids["safe"], ids["fast"], ids["fewer"]}) == 3
