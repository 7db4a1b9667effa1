"""merge-run merges what it planned (issue 9, closing two gaps of its rules):

- an input is re-identified when a worker opens it: a file swapped, changed or gone between
  planning and merging (st_dev, st_ino, size, mtime against the journal's ``identities``) fails
  its output with one line naming the file and what changed (``InputChanged``, exit 3), recorded
  in the journal; nothing of that output is published, the other outputs are;
- ``--run`` is a plan option like ``--target-size``: a rerun with another is refused (exit 2)
  unless ``--replan``.

(Retirement after such a failure is checked with the invariants, in test_invariants.py.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import InputChanged
from engine.merge import run as merge_run_module
from engine.merge.journal import Journal
from engine.metadata import sidecar_path

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def no_catalogue_from_the_environment(monkeypatch):
    monkeypatch.delenv("TMBMERGE_CATALOG", raising=False)


def _swap(path: Path) -> None:
    """Another file (same bytes, same size, same mtime) now has the name: only the inode differs."""
    copy = path.with_name(".copy")
    shutil.copy2(path, copy)
    os.replace(copy, path)


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def _grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 100)


CHANGES = {  # how the input is changed after planning, and what the refusal must say
    "swapped": (_swap, "another file now has its name"),
    "touched": (_touch, "modified since planning"),
    "grown": (_grow, "size"),
    "gone": (Path.unlink, "is gone since merge-run planned it"),
}


def change_after_planning(monkeypatch, victim: Path, change) -> None:
    """Let merge-run plan, then change ``victim`` before any worker opens it."""
    real = merge_run_module.plan_run

    def plan_then_change(*args, **kwargs):
        plan = real(*args, **kwargs)
        change(victim)
        return plan

    monkeypatch.setattr(merge_run_module, "plan_run", plan_then_change)


def three_outputs(paths) -> int:
    sizes = sorted(p.stat().st_size for p in paths)
    return sizes[-1] + sizes[-2] + sizes[0] // 2


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_an_input_changed_between_planning_and_merging_fails_its_output(
    kind, cli, tmb_run, tmp_path, monkeypatch
):
    folder, out = tmb_run[0].parent, tmp_path / "out"
    victim = tmb_run[2]
    change, said = CHANGES[kind]
    change_after_planning(monkeypatch, victim, change)
    result = cli(
        "merge-run", folder, "--out-dir", out, "--target-size", three_outputs(tmb_run), "--jobs", 1
    )
    assert result.code == 3, result.err
    assert "Traceback" not in result.err
    [line] = [line for line in result.err.splitlines() if str(victim) in line]
    assert said in line and "nothing of its output is merged" in line, line
    with Journal.open_existing(out) as journal:
        entries = {e.name: e for e in journal.entries()}
    [failed] = [e for e in entries.values() if str(victim) in e.inputs]
    assert failed.state == "failed" and str(victim) in failed.error and said in failed.error
    assert not (out / failed.name).exists() and not sidecar_path(out / failed.name).exists()
    assert not [n for n in os.listdir(out) if ".tmbpart-" in n], "no temporary output left"
    published = sorted(p.name for p in out.glob("*.tmb"))
    assert (
        published == sorted(n for n, e in entries.items() if e.state != "failed")
        and len(published) == 2
    )


def test_the_failure_is_in_the_json_summary(cli, tmb_run, tmp_path, monkeypatch):
    folder, out = tmb_run[0].parent, tmp_path / "out"
    victim = tmb_run[4]
    change_after_planning(monkeypatch, victim, _swap)
    result = cli(
        "merge-run",
        folder,
        "--out-dir",
        out,
        "--target-size",
        three_outputs(tmb_run),
        "--jobs",
        1,
        "--json",
    )
    assert result.code == 3, result.err
    [failure] = result.json()["failures"]
    assert failure["error"] == InputChanged.__name__ and failure["exit_code"] == 3
    assert failure["path"] == str(victim)
    # the rerun plans the input as it is now and finishes the run
    monkeypatch.undo()
    again = cli(
        "merge-run",
        folder,
        "--out-dir",
        out,
        "--target-size",
        three_outputs(tmb_run),
        "--jobs",
        1,
        "--quiet",
    )
    assert again.code == 0, again.err
    assert len(list(out.glob("*.tmb"))) == 3


def test_an_unchanged_input_merges_as_planned(cli, tmb_run, tmp_path, monkeypatch):
    """The check refuses only a change: re-reading the same file (a no-op 'change') merges."""
    folder, out = tmb_run[0].parent, tmp_path / "out"
    change_after_planning(monkeypatch, tmb_run[2], lambda path: path.read_bytes())
    result = cli(
        "merge-run",
        folder,
        "--out-dir",
        out,
        "--target-size",
        three_outputs(tmb_run),
        "--jobs",
        1,
        "--quiet",
    )
    assert result.code == 0, result.err


# -- --run is a plan option ------------------------------------------------------------------------

OTHER_RUN = 179000


def test_a_rerun_with_another_run_refuses_unless_replanning(
    cli, tmb_run, tmp_path, tmb_file_factory
):
    folder, out = tmb_run[0].parent, tmp_path / "out"
    other = folder / f"tmb_{OTHER_RUN:010d}_p000.tmb"
    tmb_file_factory(other, run=OTHER_RUN, partition=0, first_event=1)
    run = 178000  # the small run's (conftest.SMALL_RUN)
    assert cli("merge-run", folder, "--out-dir", out, "--run", run, "--quiet").code == 0
    first = sorted(out.glob("*.tmb"))
    assert len(first) == 1
    for changed, said in (
        (("--run", OTHER_RUN), f"--run {run} (now --run {OTHER_RUN})"),
        ((), f"--run {run} (now no --run)"),
    ):
        result = cli("merge-run", folder, "--out-dir", out, *changed, "--quiet")
        assert result.code == 2, result.err
        assert said in result.err and "--replan" in result.err and len(result.err.splitlines()) == 1
        assert sorted(out.glob("*.tmb")) == first, "nothing merged by a refused rerun"
    replanned = cli("merge-run", folder, "--out-dir", out, "--replan", "--quiet")
    assert replanned.code == 0, replanned.err
    published = sorted(out.glob("*.tmb"))
    assert first[0] in published and len(published) == 2  # finished output stands, other run merged
    assert (
        cli("merge-run", folder, "--out-dir", out, "--quiet").code == 0
    )  # same options now: a no-op
    assert sorted(out.glob("*.tmb")) == published


def test_the_campaign_recovery_command_repeats_the_plan_options(cli, tmb_run, tmp_path):
    """The recovery list's merge-run command resumes a folder: it carries the options its journal
    recorded (a rerun with others would be refused), and is accepted as it is."""
    import shlex

    from bindings.serve.recovery import _merge_run_command

    folder, out = tmb_run[0].parent, tmp_path / "out"
    target = three_outputs(tmb_run)
    assert (
        cli(
            "merge-run",
            folder,
            "--out-dir",
            out,
            "--run",
            178000,
            "--target-size",
            target,
            "--quiet",
        ).code
        == 0
    )
    with Journal.open_existing(out) as journal:
        options = journal.settings()
    command = _merge_run_command(
        str(folder), str(out), 178000, "safe", "sqlite:///unused.db", options=options
    )
    assert f"--run 178000 --target-size {target}" in command and "--max-events" not in command
    words = shlex.split(command)[1:]
    catalog_at = words.index("--catalog")
    rerun = cli(*words[:catalog_at], "--quiet")  # the plan options, without the catalogue
    assert rerun.code == 0, rerun.err
    unplanned = _merge_run_command(
        str(folder), str(out), 178000, "safe", "sqlite:///unused.db", options={"run": None}
    )
    assert "--run" not in unplanned
