"""Issue 10: with a catalogue, an input's sidecar and the catalogue must agree on its parents.

A sidecar naming a parent the catalogue does not record for that input (a parent it does not
know at all, or another file's) would, once merged, put a lineage into the merged file's
metadata that the catalogue contradicts; ``merge`` and ``merge-run`` refuse such an input (exit
6, a disagreement with the catalogue record), naming it, the sidecar's parents and the
catalogue's.  Against a real sqlite catalogue, through the command line.
"""

from __future__ import annotations

import json


def rewrite_parents(path, parents: list[str]) -> None:
    sidecar = path.with_name(path.name + ".json")
    md = json.loads(sidecar.read_text())
    md["parents"] = [{"file_name": name} for name in parents]
    sidecar.write_text(json.dumps(md))


def imported(cli, tmb_run, tmp_path) -> str:
    url = f"sqlite://{tmp_path / 'cat.db'}"
    result = cli("catalog", "import", tmb_run[0].parent, "--catalog", url, "--declare-parents")
    assert result.code == 0, result.err
    return url


def test_a_sidecar_parent_unknown_to_the_catalogue_is_refused(cli, tmb_run, tmp_path):
    url = imported(cli, tmb_run, tmp_path)
    rewrite_parents(tmb_run[1], ["raw_0000178000_p999.raw"])
    result = cli("merge", *tmb_run[:3], "-o", tmp_path / "m.tmb", "--catalog", url)
    assert result.code == 6, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith(f"tmbmerge: error: {tmb_run[1]}: parents in the sidecar differ from ")
    assert "(raw_0000178000_p999.raw not among them)" in line
    assert "raw_0000178000_p001.raw" in line  # what the catalogue records
    assert not (tmp_path / "m.tmb").exists()
    # without a catalogue there is nothing to check the sidecar's parents against
    alone = cli("merge", *tmb_run[:3], "-o", tmp_path / "alone.tmb")
    assert alone.code == 0, alone.err


def test_another_inputs_parent_is_refused_by_merge_run_too(cli, tmb_run, tmp_path):
    url = imported(cli, tmb_run, tmp_path)
    rewrite_parents(tmb_run[2], ["raw_0000178000_p000.raw"])  # known, but p000's parent
    result = cli("merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "out", "--catalog", url)
    assert result.code == 6, result.err
    assert f"{tmb_run[2]}: parents in the sidecar differ from the catalogue's" in result.err
    assert not list((tmp_path / "out").glob("*.tmb"))
