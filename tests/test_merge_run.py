"""``plan_run`` / ``tmbmerge plan`` and ``merge_run`` / ``tmbmerge merge-run`` /
``tmbmerge status``.

- Planning: outputs never mix runs, hold consecutive partitions in partition order (whatever
  the order of the arguments), are as few as the target size allows and of similar size; an
  input as large as the target is an output of its own; ``--max-events`` caps events; outputs
  are named ``tmb_{run:010d}_mrg_pXXX-pYYY.tmb``; a partition given twice is refused.
- Merging a run: every output holds exactly its planned inputs' events and verifies against its
  sidecar; ``--jobs 1`` (inline) and ``--jobs 2`` (worker processes) give the same outputs; the
  ``--json`` report carries checksums and counts that match the files.
- Journal: ``status --json`` shows every output's state; a failed output is recorded with its
  error and redone on rerun; an output deleted after a finished run is redone; a file at an
  output's name that this plan did not make is never overwritten.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import zlib

import pytest

from engine.generate import file_name
from engine.merge import MergeSpec, merge_run, plan_run
from engine.merge.executors import InlineExecutor, ProcessExecutor, make_executor
from engine.merge.journal import JOURNAL_NAME
from engine.metadata import read_sidecar, sidecar_path
from engine.verify import verify_file

pytestmark = pytest.mark.timeout(120)  # a hang fails here, not at the global limit

RUN = 178000
OTHER_RUN = 178001
NAME_RE = re.compile(r"^tmb_(\d{10})_mrg_p(\d{3})-p(\d{3})\.tmb$")


def partition(path) -> int:
    return int(re.search(r"_p(\d{3})\.tmb$", str(path)).group(1))


def concat_events(read_event_list, paths):
    return [event for path in paths for event in read_event_list(path)]


def three_output_target(paths) -> int:
    """A target size that cuts the small run (6 similar files) into 3 outputs of 2 inputs."""
    sizes = sorted(p.stat().st_size for p in paths)
    return sizes[-1] + sizes[-2] + sizes[0] // 2


def fewest_outputs(sizes, target) -> int:
    """The fewest runs of consecutive inputs with each run's total within ``target`` (greedy is
    optimal)."""
    count, current = 0, None
    for size in sizes:
        if current is None or current + size > target:
            count, current = count + 1, size
        else:
            current += size
    return count


def assert_output_matches_plan(out, planned, read_event_list):
    assert out.name == planned.name
    check = verify_file(out, metadata="auto")
    assert check.ok, check.error
    assert check.metadata_checked == "sidecar"
    assert read_event_list(out) == concat_events(read_event_list, planned.input_paths)
    md = read_sidecar(out)
    assert md["parents"] == [{"file_name": os.path.basename(p)} for p in planned.input_paths]
    assert md["event_count"] == planned.event_count
    assert md["checksum"] == [f"adler32:{zlib.adler32(out.read_bytes()):08x}"]


# -- planning ------------------------------------------------------------------------------------


def test_plan_never_mixes_runs_and_orders_by_partition(tmb_run, tmb_file_factory):
    folder = tmb_run[0].parent
    others = [
        tmb_file_factory(
            folder / file_name(OTHER_RUN, p), run=OTHER_RUN, partition=p, first_event=1 + 100 * p
        ).path
        for p in (4, 7, 9)
    ]
    target = three_output_target(tmb_run)

    plan = plan_run([folder], target_size=target)

    assert [o.run for o in plan.outputs] == sorted(o.run for o in plan.outputs)
    for output in plan.outputs:
        assert {i.run for i in output.inputs} == {output.run}
        parts = [i.partition for i in output.inputs]
        assert parts == sorted(parts)
        m = NAME_RE.match(output.name)
        assert m, output.name
        assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (
            output.run,
            parts[0],
            parts[-1],
        )
    by_run = {}
    for output in plan.outputs:
        by_run.setdefault(output.run, []).extend(output.input_paths)
    assert by_run == {RUN: [str(p) for p in tmb_run], OTHER_RUN: [str(p) for p in others]}

    # the order of the arguments does not matter: partition order does
    shuffled = [
        str(p)
        for p in (
            tmb_run[3],
            others[2],
            tmb_run[0],
            tmb_run[5],
            others[0],
            tmb_run[1],
            tmb_run[4],
            others[1],
            tmb_run[2],
        )
    ]
    again = plan_run(shuffled, target_size=target)
    assert [(o.name, [os.path.basename(p) for p in o.input_paths]) for o in again.outputs] == [
        (o.name, [os.path.basename(p) for p in o.input_paths]) for o in plan.outputs
    ]
    # and --run picks one run
    assert {o.run for o in plan_run([folder], run=OTHER_RUN, target_size=target).outputs} == {
        OTHER_RUN
    }


@pytest.mark.parametrize("share", [0.3, 0.45, 0.7, 1.5])
def test_plan_outputs_near_the_target_size(share, tmb_run):
    total = sum(p.stat().st_size for p in tmb_run)
    biggest = max(p.stat().st_size for p in tmb_run)
    target = int(total * share)

    plan = plan_run([tmb_run[0].parent], target_size=target)

    sizes = [o.file_size for o in plan.outputs]
    assert len(plan.outputs) == fewest_outputs([p.stat().st_size for p in tmb_run], target)
    assert len(plan.outputs) >= math.ceil(total / target)
    assert all(size <= target for size in sizes)
    assert max(sizes) - min(sizes) <= biggest  # similar sizes, no tiny remainder
    assert [i for o in plan.outputs for i in o.input_paths] == [str(p) for p in tmb_run]


def test_an_input_larger_than_the_target_is_an_output_of_its_own(
    tmb_run, tmb_file_factory, read_event_list
):
    folder = tmb_run[0].parent
    last = read_event_list(tmb_run[-1])[-1][1]
    big = tmb_file_factory(
        folder / file_name(RUN, 6), partition=6, first_event=last + 1, n_events=200
    ).path
    small = max(p.stat().st_size for p in tmb_run)
    target = 2 * small + small // 2
    assert big.stat().st_size > target

    plan = plan_run([folder], target_size=target)

    alone = [o for o in plan.outputs if str(big) in o.input_paths]
    assert len(alone) == 1 and alone[0].input_paths == [str(big)]
    assert alone[0].name == f"tmb_{RUN:010d}_mrg_p006-p006.tmb"
    assert all(o.file_size <= target for o in plan.outputs if o is not alone[0])
    assert [i for o in plan.outputs for i in o.input_paths] == [str(p) for p in [*tmb_run, big]]

    # below every input's size, every input is its own output
    tiny = plan_run([folder], target_size=min(p.stat().st_size for p in tmb_run) // 2)
    assert [o.input_paths for o in tiny.outputs] == [[str(p)] for p in [*tmb_run, big]]


def test_plan_max_events(tmb_run):
    plan = plan_run([tmb_run[0].parent], max_events=80)  # 40 events per input
    assert [[partition(p) for p in o.input_paths] for o in plan.outputs] == [[0, 1], [2, 3], [4, 5]]
    assert all(o.event_count <= 80 for o in plan.outputs)
    assert [o.name for o in plan.outputs] == [
        f"tmb_{RUN:010d}_mrg_p000-p001.tmb",
        f"tmb_{RUN:010d}_mrg_p002-p003.tmb",
        f"tmb_{RUN:010d}_mrg_p004-p005.tmb",
    ]


def test_plan_json(cli, tmb_run):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    result = cli("plan", folder, "--target-size", target, "--json")
    assert result.code == 0, result.err
    data = result.json()
    plan = plan_run([folder], target_size=target)
    assert data == json.loads(json.dumps(plan.to_dict()))
    assert [o["output"] for o in data["outputs"]] == [o.name for o in plan.outputs]
    assert data["totals"] == {
        "outputs": 3,
        "inputs": 6,
        "input_bytes": sum(p.stat().st_size for p in tmb_run),
        "events": 240,
    }
    assert data["rejected"] == []
    for output in data["outputs"]:
        assert output["input_count"] == len(output["inputs"]) == 2
        assert output["event_count"] == sum(i["event_count"] for i in output["inputs"])
        assert all(i["run"] == RUN for i in output["inputs"])
    text = cli("plan", folder, "--target-size", target)
    assert text.code == 0 and all(o.name in text.out for o in plan.outputs)


def test_same_partition_twice_is_refused(cli, tmb_run, tmp_path):
    folder = tmb_run[0].parent
    again = tmp_path / "resubmitted" / tmb_run[1].name
    again.parent.mkdir()
    shutil.copyfile(tmb_run[1], again)
    out_dir = tmp_path / "merged"

    for command in (["plan", folder, again], ["merge-run", folder, again, "--out-dir", out_dir]):
        result = cli(*command)
        assert result.code == 6, result.err
        assert "partition 1" in result.err and "twice" in result.err
        # both files must be named so that the user can tell which two (their base names are equal)
        assert str(again) in result.err and str(tmb_run[1]) in result.err, result.err
    assert not any(p.suffix == ".tmb" for p in out_dir.iterdir())

    plan = plan_run([folder, again], skip_bad=True)
    assert [path for path, _ in plan.rejected] == [str(again)]


# -- merging a run -------------------------------------------------------------------------------


def test_merge_run_inline_and_processes_give_the_same_outputs(
    cli, tmb_run, tmp_path, read_event_list, leftovers
):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    assert isinstance(make_executor(1), InlineExecutor) and isinstance(
        make_executor(2), ProcessExecutor
    )

    reports = {}
    for jobs in (1, 2):
        out_dir = tmp_path / f"jobs{jobs}"
        result = cli(
            "merge-run",
            folder,
            "--out-dir",
            out_dir,
            "--target-size",
            target,
            "--jobs",
            jobs,
            "--json",
        )
        assert result.code == 0, result.err
        reports[jobs] = result.json()
        assert sorted(p.name for p in out_dir.glob("*.tmb")) == [o.name for o in plan.outputs]
        for planned in plan.outputs:
            assert_output_matches_plan(out_dir / planned.name, planned, read_event_list)
        assert leftovers(out_dir) == []

    for jobs, report in reports.items():
        assert report["ok"] is True and report["failures"] == []
        assert [os.path.basename(o["output"]) for o in report["outputs"]] == [
            o.name for o in plan.outputs
        ]
        for output in report["outputs"]:
            path = tmp_path / f"jobs{jobs}" / os.path.basename(output["output"])
            assert output["status"] == "merged" and output["verified"] is True
            assert output["checksum"] == read_sidecar(path)["checksum"][0]
            assert output["checksum"] == f"adler32:{zlib.adler32(path.read_bytes()):08x}"
            assert output["file_size"] == path.stat().st_size
        assert report["totals"]["outputs"] == 3 and report["totals"]["events"] == 240
        assert report["totals"]["bytes_in"] == sum(p.stat().st_size for p in tmb_run)
    for planned in plan.outputs:  # same events; checksums may differ (UUIDs, times in headers)
        assert read_event_list(tmp_path / "jobs1" / planned.name) == read_event_list(
            tmp_path / "jobs2" / planned.name
        )


def test_python_api_reports_are_json(tmb_run, tmp_path):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    report = merge_run([folder], tmp_path / "out", target_size=target, spec=MergeSpec(mode="fast"))
    assert report.ok
    assert [o.output.name for o in report.outputs] == [o.name for o in plan.outputs]
    assert all(o.mode == "fast" and not o.verified for o in report.outputs)
    for thing in (plan, report, *report.outputs):
        assert json.loads(json.dumps(thing.to_dict())) == thing.to_dict()


def test_dask_executor(cli, tmb_run, tmp_path, read_event_list, monkeypatch):
    pytest.importorskip("distributed")
    import tempfile

    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    out_dir = tmp_path / "out"
    scratch = tmp_path / "tmpdir"  # $TMPDIR as this process sees it
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = cli(
        "merge-run",
        folder,
        "--out-dir",
        out_dir,
        "--target-size",
        target,
        "--executor",
        "dask:local",
        "--json",
    )
    assert result.code == 0, result.err
    assert result.json()["ok"] is True
    assert list(scratch.iterdir()) == []  # no dask-scratch-space/ left behind
    for planned in plan_run([folder], target_size=target).outputs:
        assert_output_matches_plan(out_dir / planned.name, planned, read_event_list)


# -- the journal ---------------------------------------------------------------------------------


def _flip_byte_in_block(path, block):
    import engine
    from engine.format import BLOCK_HEADER_SIZE

    with engine.open_file(path) as reader:
        entry = reader.blocks[block]
        offset = int(entry["offset"]) + BLOCK_HEADER_SIZE + int(entry["compressed_length"]) // 3
    with open(path, "r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0x10]))


def test_failed_output_is_journaled_and_redone_on_rerun(
    cli, tmb_run, tmb_run_template, tmp_path, read_event_list, leftovers
):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    broken = plan.outputs[1]
    damaged = broken.input_paths[1]
    _flip_byte_in_block(damaged, block=1)
    out_dir = tmp_path / "out"

    result = cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target, "--json")

    assert result.code == 5, result.err
    report = result.json()
    assert report["ok"] is False
    assert [f["output"] for f in report["failures"]] == [broken.name]
    failure = report["failures"][0]
    assert (
        failure["exit_code"] == 5 and failure["path"] == damaged and failure["region"] == "block 1"
    )
    assert sorted(p.name for p in out_dir.glob("*.tmb")) == sorted(
        o.name for o in plan.outputs if o is not broken
    )
    assert leftovers(out_dir) == []

    status = cli("status", out_dir, "--json")
    assert status.code == 0, status.err
    data = status.json()
    assert set(data) == {"outputs", "summary", "retired"}
    assert data["summary"] == {"failed": 1, "verified": 2}
    assert data["retired"] == []
    rows = {row["name"]: row for row in data["outputs"]}
    assert sorted(rows) == sorted(o.name for o in plan.outputs)
    for planned in plan.outputs:
        row = rows[planned.name]
        assert set(row) == {
            "name",
            "run",
            "inputs",
            "state",
            "mode",
            "file_size",
            "checksum",
            "event_count",
            "error",
            "updated",
            "identities",
            "accepted",
        }
        assert row["run"] == RUN and row["inputs"] == planned.input_paths and row["mode"] == "safe"
        if planned is broken:
            assert row["state"] == "failed"
            assert damaged in row["error"] and "block 1" in row["error"]
        else:
            out = out_dir / planned.name
            assert row["state"] == "verified" and row["error"] is None
            assert row["file_size"] == out.stat().st_size
            assert row["checksum"] == read_sidecar(out)["checksum"][0]
            assert row["event_count"] == planned.event_count
    text = cli("status", out_dir)
    assert text.code == 0 and "failed" in text.out and broken.name in text.out

    # repair the input and rerun: only the failed output is merged
    shutil.copyfile(tmb_run_template / os.path.basename(damaged), damaged)
    before = {o.name: (out_dir / o.name).stat().st_ino for o in plan.outputs if o is not broken}
    result = cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target, "--json")
    assert result.code == 0, result.err
    statuses = {os.path.basename(o["output"]): o["status"] for o in result.json()["outputs"]}
    assert statuses == {
        o.name: ("merged" if o is broken else "already verified") for o in plan.outputs
    }
    assert {name: (out_dir / name).stat().st_ino for name in before} == before
    for planned in plan.outputs:
        assert_output_matches_plan(out_dir / planned.name, planned, read_event_list)
    assert cli("status", out_dir, "--json").json()["summary"] == {"verified": 3}
    assert leftovers(out_dir) == []


def test_output_deleted_after_a_finished_run_is_redone(
    cli, tmb_run, tmp_path, read_event_list, leftovers
):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    out_dir = tmp_path / "out"
    assert cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target).code == 0
    assert (out_dir / JOURNAL_NAME).exists()
    gone = plan.outputs[0]
    (out_dir / gone.name).unlink()
    kept = {o.name: (out_dir / o.name).stat() for o in plan.outputs[1:]}

    result = cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target, "--json")

    assert result.code == 0, result.err
    statuses = {os.path.basename(o["output"]): o["status"] for o in result.json()["outputs"]}
    assert statuses == {
        o.name: ("merged" if o is gone else "already verified") for o in plan.outputs
    }
    for name, stat in kept.items():
        now = (out_dir / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    for planned in plan.outputs:
        assert_output_matches_plan(out_dir / planned.name, planned, read_event_list)
    assert cli("status", out_dir, "--json").json()["summary"] == {"verified": 3}
    assert leftovers(out_dir) == []


def test_a_foreign_file_at_an_output_name_is_never_overwritten(cli, tmb_run, tmp_path, sha256_of):
    folder = tmb_run[0].parent
    target = three_output_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    foreign = out_dir / plan.outputs[1].name
    shutil.copyfile(tmb_run[0], foreign)
    digest = sha256_of(foreign)

    result = cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target)

    assert result.code == 7, result.err
    assert str(foreign) in result.err and "--force" in result.err
    assert sha256_of(foreign) == digest
    assert not sidecar_path(foreign).exists()


def test_status_without_a_journal(cli, tmp_path):
    result = cli("status", tmp_path)
    assert result.code == 3
    assert str(tmp_path) in result.err and "journal" in result.err
