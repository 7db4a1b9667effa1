"""Issue 9's findings, one test each: mistakes and faults that destroyed an input, lost events or
published them twice.  (Findings 6 and 7, the SAM web client's answers and the race-free
not-merged-twice check, are tested with the catalogue backends.)

1. an output that is one of the inputs (by name, symlink or hard link) is refused, even with
--force; 2. ``merge-run d --out-dir d`` run twice does not merge its own output again;
3. an input skipped as damaged (--skip-bad) is never retired;
4. the journal identifies inputs by resolved path and (st_dev, st_ino): a rerun from another
   folder, or an edited journal row, retires nothing it did not merge;
5. a rerun re-verifies an output before retiring its inputs: a damaged output retires nothing;
8. with --skip-bad, a damaged replica of a partition does not shadow the good copy;
9. the next merge to an output removes what a ``kill -9`` of an earlier one left (temporary, lock);
10. retiring a symlinked input retires the file it names;
11. quiet wrong answers: a safe merge of an input without a sidecar, a mistyped ``sqlite:///``
    path, a rerun with another --target-size, and the message after SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from merge_helpers import flip_payload_byte, wait_for

from engine.fsutil import parse_temporary_name
from engine.merge.journal import JOURNAL_NAME
from engine.metadata import sidecar_path
from engine.verify import verify_file

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def no_catalogue_from_the_environment(monkeypatch):
    monkeypatch.delenv("TMBMERGE_CATALOG", raising=False)


def digests(paths, sha256_of) -> dict:
    return {Path(p): sha256_of(p) for p in paths for p in (p, sidecar_path(p)) if Path(p).exists()}


def catalogue(cli, tmp_path, *folders) -> str:
    url = f"sqlite://{tmp_path / 'cat.db'}"
    for folder in folders:
        result = cli("catalog", "import", folder, "--declare-parents", "--catalog", url)
        assert result.code == 0, result.err
    return url


def run_events(read_event_list, paths):
    return sorted((run, event) for path in paths for run, event, _ in read_event_list(path))


# -- 1. the output is an input -------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["same name", "symlink", "hard link"])
def test_1_an_output_that_is_an_input_is_refused_even_with_force(
    alias, cli, tmb_run, tmp_path, sha256_of
):
    first = tmb_run[0]
    output = {
        "same name": first,
        "symlink": tmp_path / "alias.tmb",
        "hard link": tmp_path / "link.tmb",
    }[alias]
    if alias == "symlink":
        output.symlink_to(first)
    elif alias == "hard link":
        os.link(first, output)
    before = digests(tmb_run, sha256_of)
    result = cli("merge", *tmb_run[:3], "-o", output, "--force", "--quiet")
    assert result.code == 7, result.err
    assert "is one of the inputs" in result.err and str(first) in result.err
    assert digests(tmb_run, sha256_of) == before


@pytest.mark.parametrize("form", ["hadd -f", "merge --force"])
def test_1_a_merged_target_that_is_a_source_is_refused_before_any_metadata_check(
    form, cli, tmb_run, tmp_path, sha256_of
):
    """A merged file (data tier of merged files) among unmerged sources would fail the inputs'
    agreement check (exit 6); the target-is-source refusal (exit 7) must come first."""
    from engine.errors import OutputIsInput
    from engine.merge import MergeSpec, merge_files

    target = tmp_path / "out.tmb"
    assert cli("merge", *tmb_run[:2], "-o", target, "--quiet").code == 0
    args = (
        ["hadd", "-f", target, target, tmb_run[2]]
        if form == "hadd -f"
        else ["merge", target, tmb_run[2], "-o", target, "--force"]
    )
    before = digests([target, *tmb_run], sha256_of)
    result = cli(*args)
    assert result.code == OutputIsInput.exit_code == 7, result.err
    assert "is one of the inputs" in result.err and "data_tier" not in result.err
    with pytest.raises(OutputIsInput):
        merge_files([target, tmb_run[2]], target, MergeSpec(force=True))
    assert digests([target, *tmb_run], sha256_of) == before


# -- 2. merge-run takes its own outputs as inputs ------------------------------------------------


def test_2_merge_run_into_its_input_folder_twice_merges_nothing_again(
    cli, tmb_run, read_event_list, sha256_of
):
    folder = tmb_run[0].parent
    first = cli("merge-run", folder, "--out-dir", folder, "--quiet")
    assert first.code == 0, first.err
    outputs = sorted(set(folder.glob("*.tmb")) - set(tmb_run))
    assert len(outputs) == 1
    published = sha256_of(outputs[0])
    again = cli("merge-run", folder, "--out-dir", folder, "--quiet")
    assert again.code == 0, again.err
    assert sorted(set(folder.glob("*.tmb")) - set(tmb_run)) == outputs
    assert sha256_of(outputs[0]) == published
    assert run_events(read_event_list, outputs) == run_events(read_event_list, tmb_run)


def test_2_a_merged_file_is_never_a_merge_run_input(cli, tmb_run, tmp_path):
    folder = tmb_run[0].parent
    merged = tmp_path / "merged.tmb"
    assert cli("merge", *tmb_run, "-o", merged, "--quiet").code == 0
    named = cli("merge-run", merged, *tmb_run, "--out-dir", tmp_path / "out", "--quiet")
    assert named.code == 6, named.err
    assert f"{merged}: is a merged file (data tier thumbnail)" in named.err
    shutil.move(merged, folder / merged.name)  # found in a folder: left out, and said so
    shutil.move(sidecar_path(merged), sidecar_path(folder / merged.name))
    plan = cli("plan", folder)
    assert plan.code == 0, plan.err
    assert f"ignored {folder / merged.name}: is a merged file" in plan.out
    assert "1 output from 6 inputs" in plan.out


# -- 3. a skipped input is retired ---------------------------------------------------------------


def test_3_an_input_skipped_as_damaged_is_never_retired(cli, tmb_run, tmp_path, sha256_of):
    folder = tmb_run[0].parent
    url = catalogue(cli, tmp_path, folder)
    damaged = tmb_run[2]
    flip_payload_byte(damaged, block=1)
    before = digests([damaged], sha256_of)
    result = cli(
        "merge-run",
        folder,
        "--out-dir",
        tmp_path / "out",
        "--catalog",
        url,
        "--declare",
        "--skip-bad",
        "--retire-inputs=delete",
        "--jobs",
        1,
        "--json",
    )
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    assert [Path(s["file"]) for s in output["skipped"]] == [damaged]
    assert sorted(Path(r["file"]) for r in output["retired"]) == [
        p for p in tmb_run if p != damaged
    ]
    assert digests([damaged], sha256_of) == before


# -- 4. the journal names inputs as typed --------------------------------------------------------


def test_4_a_rerun_from_another_folder_retires_nothing_it_did_not_merge(
    cli, tmb_run, tmp_path, monkeypatch, sha256_of
):
    here = tmb_run[0].parent.parent  # holds run/
    url = catalogue(cli, tmp_path, tmb_run[0].parent)
    out = tmp_path / "out"
    monkeypatch.chdir(here)
    assert (
        cli("merge-run", "run", "--out-dir", out, "--catalog", url, "--declare", "--quiet").code
        == 0
    )
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(
        here / "run", elsewhere / "run"
    )  # another folder's files of the same names, never merged
    others = sorted((elsewhere / "run").glob("*.tmb"))
    before = digests(others, sha256_of)
    monkeypatch.chdir(elsewhere)
    cli(
        "merge-run",
        "run",
        "--out-dir",
        out,
        "--catalog",
        url,
        "--declare",
        "--retire-inputs=delete",
        "--quiet",
    )
    assert digests(others, sha256_of) == before


def test_4_an_edited_journal_row_retires_nothing_it_names(
    cli, tmb_run, tmp_path, tmb_file_factory, sha256_of
):
    folder = tmb_run[0].parent
    url = catalogue(cli, tmp_path, folder)
    out = tmp_path / "out"
    assert (
        cli("merge-run", folder, "--out-dir", out, "--catalog", url, "--declare", "--quiet").code
        == 0
    )
    victim = tmp_path / "precious" / "tmb_0000179000_p000.tmb"
    tmb_file_factory(victim, run=179000, partition=0, first_event=1)
    before = digests([victim], sha256_of)
    with sqlite3.connect(
        out / JOURNAL_NAME
    ) as db:  # every mention of the first input now names the victim
        columns = [
            row[1] for row in db.execute("PRAGMA table_info(outputs)") if row[2].upper() == "TEXT"
        ]
        for column in columns:
            db.execute(
                f"UPDATE outputs SET {column} = replace({column}, ?, ?)",
                (str(tmb_run[0]), str(victim)),
            )
    # the rerun names the other inputs only: the edited row is all that says the first was merged
    result = cli(
        "merge-run",
        *tmb_run[1:],
        "--out-dir",
        out,
        "--catalog",
        url,
        "--declare",
        "--retire-inputs=delete",
    )
    assert result.code != 0
    assert digests([victim], sha256_of) == before


# -- 5. a rerun trusts an output by its size ------------------------------------------------------


def test_5_a_damaged_output_retires_nothing(cli, tmb_run, tmp_path, sha256_of):
    folder = tmb_run[0].parent
    url = catalogue(cli, tmp_path, folder)
    out = tmp_path / "out"
    assert (
        cli("merge-run", folder, "--out-dir", out, "--catalog", url, "--declare", "--quiet").code
        == 0
    )
    [output] = out.glob("*.tmb")
    flip_payload_byte(output, block=1)
    before = digests(tmb_run, sha256_of)
    result = cli(
        "merge-run",
        folder,
        "--out-dir",
        out,
        "--catalog",
        url,
        "--declare",
        "--retire-inputs=delete",
    )
    assert result.code == 5, result.err
    assert "now retired" not in result.out
    assert str(output) in result.err
    assert digests(tmb_run, sha256_of) == before


# -- 8. a damaged replica shadows the good copy --------------------------------------------------


def test_8_merge_run_a_damaged_replica_does_not_shadow_the_good_copy(
    cli, tmb_run, tmp_path, read_event_list
):
    folder = tmb_run[0].parent
    replicas = tmp_path / "replicas"
    replicas.mkdir()
    good = tmb_run[2]
    for item in (good, sidecar_path(good)):
        shutil.copy(item, replicas / item.name)
    damaged = replicas / good.name
    flip_payload_byte(damaged, block=1)
    result = cli(
        "merge-run",
        replicas,
        folder,
        "--out-dir",
        tmp_path / "out",
        "--skip-bad",
        "--jobs",
        1,
        "--json",
    )
    assert result.code == 0, result.err
    report = result.json()
    [output] = report["outputs"]
    assert Path(output["output"]).name.endswith("_mrg_p000-p005.tmb")
    assert run_events(read_event_list, [output["output"]]) == run_events(read_event_list, tmb_run)
    skipped = [Path(s["file"]) for s in report["skipped"]] + [
        Path(s["file"]) for s in output["skipped"]
    ]
    assert skipped == [damaged]


def test_8_merge_a_damaged_replica_does_not_shadow_the_good_copy(
    cli, tmb_run, tmp_path, read_event_list
):
    good = tmb_run[2]
    replica = tmp_path / "replicas" / good.name
    replica.parent.mkdir()
    for item in (good, sidecar_path(good)):
        shutil.copy(item, replica.parent / item.name)
    flip_payload_byte(replica, block=1)
    output = tmp_path / "m.tmb"
    result = cli("merge", replica, *tmb_run, "-o", output, "--skip-bad", "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert [Path(s["file"]) for s in report["skipped"]] == [replica]
    assert run_events(read_event_list, [output]) == run_events(read_event_list, tmb_run)


# -- 9. kill -9 of a plain merge -----------------------------------------------------------------


def test_9_the_next_merge_removes_what_a_killed_one_left(tmb_big_run, tmp_path, leftovers):
    inputs = sorted(map(str, tmb_big_run.glob("*.tmb")))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tmb"
    command = [
        sys.executable,
        "-m",
        "bindings.cli",
        "merge",
        *inputs,
        "-o",
        str(out),
        "--mode",
        "deep",
        "--jobs",
        "1",
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: (
                process.poll() is None and any(parse_temporary_name(n) for n in os.listdir(out_dir))
            ),
            what="a temporary output",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert leftovers(out_dir), "a killed merge leaves its temporary file and lock"
    again = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert leftovers(out_dir) == []
    assert sorted(os.listdir(out_dir)) == ["m.tmb", "m.tmb.json"]


# -- 10. a symlinked input -----------------------------------------------------------------------


def test_10_retiring_a_symlinked_input_retires_the_file_it_names(cli, tmb_run, tmp_path, sha256_of):
    folder = tmb_run[0].parent
    links = tmp_path / "links"
    links.mkdir()
    for path in tmb_run:
        (links / path.name).symlink_to(path)
        (links / sidecar_path(path).name).symlink_to(sidecar_path(path))
    before = {p.name: sha256_of(p) for p in tmb_run}
    url = catalogue(cli, tmp_path, folder)
    retired = tmp_path / "retired"
    result = cli(
        "merge-run",
        links,
        "--out-dir",
        tmp_path / "out",
        "--catalog",
        url,
        "--declare",
        "--retire-inputs",
        "--retire-dir",
        retired,
        "--quiet",
    )
    assert result.code == 0, result.err
    for path in tmb_run:
        assert not path.exists() and not sidecar_path(path).exists(), f"{path} was not retired"
        kept = retired / path.name
        assert kept.is_file() and not kept.is_symlink() and sha256_of(kept) == before[path.name]


# -- 11. quiet wrong answers ---------------------------------------------------------------------


def test_11_a_safe_merge_refuses_an_input_without_a_sidecar(cli, tmb_run, tmp_path):
    sidecar_path(tmb_run[1]).unlink()
    output = tmp_path / "m.tmb"
    result = cli("merge", *tmb_run, "-o", output)
    assert result.code == 6, result.err
    assert str(tmb_run[1]) in result.err and "--metadata none" in result.err
    assert not output.exists()
    assert cli("merge", *tmb_run, "-o", output, "--metadata", "none", "--quiet").code == 0


def test_11_a_mistyped_sqlite_catalogue_is_an_error(cli, tmb_run, tmp_path):
    url = catalogue(cli, tmp_path, tmb_run[0].parent)
    typo = url.replace("cat.db", "cta.db")
    output = tmp_path / "m.tmb"
    result = cli("merge", *tmb_run, "-o", output, "--catalog", typo)
    assert result.code == 8, result.err
    assert "cta.db" in result.err and "catalog import" in result.err
    assert not (tmp_path / "cta.db").exists() and not output.exists()
    assert cli("merge", *tmb_run, "-o", output, "--catalog", url, "--quiet").code == 0


def test_11_only_catalog_import_creates_a_catalogue(cli, tmb_run, tmp_path):
    missing = tmp_path / "nowhere.db"
    for command in (("declare", tmb_run[0]), ("catalog", "show", tmb_run[0].name)):
        result = cli(*command, "--catalog", f"sqlite://{missing}")
        assert result.code == 8, result.err
        assert f"{missing}: no catalogue here" in result.err and not missing.exists()
    imported = cli(
        "catalog",
        "import",
        tmb_run[0].parent,
        "--declare-parents",
        "--catalog",
        f"sqlite://{missing}",
    )
    assert imported.code == 0, imported.err
    assert missing.exists()


def test_11_a_rerun_with_another_target_size_refuses_unless_replanning(cli, tmb_run, tmp_path):
    folder = tmb_run[0].parent
    out = tmp_path / "out"
    total = sum(p.stat().st_size for p in tmb_run)
    assert (
        cli("merge-run", folder, "--out-dir", out, "--target-size", total // 2, "--quiet").code == 0
    )
    outputs = sorted(out.glob("*.tmb"))
    result = cli("merge-run", folder, "--out-dir", out, "--target-size", total * 2, "--quiet")
    assert result.code == 2, result.err
    assert "--target-size" in result.err and "--replan" in result.err
    assert sorted(out.glob("*.tmb")) == outputs
    replanned = cli(
        "merge-run", folder, "--out-dir", out, "--target-size", total * 2, "--replan", "--quiet"
    )
    assert replanned.code == 0, replanned.err
    assert sorted(out.glob("*.tmb")) == outputs  # finished outputs stand


def test_11_sigterm_after_outputs_were_published_says_which(tmb_big_run, tmp_path):
    out_dir = tmp_path / "out"
    total = sum(p.stat().st_size for p in tmb_big_run.glob("*.tmb"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bindings.cli",
            "merge-run",
            str(tmb_big_run),
            "--out-dir",
            str(out_dir),
            "--target-size",
            str(total // 4),
            "--jobs",
            "1",
            "--mode",
            "deep",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: process.poll() is None and out_dir.is_dir() and list(out_dir.glob("*.tmb")),
            what="a published output",
        )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    published = sorted(p.name for p in out_dir.glob("*.tmb"))
    assert published
    assert "nothing was left at the destination" not in err
    for name in published:
        assert name in err
        assert verify_file(out_dir / name, metadata="auto").ok
