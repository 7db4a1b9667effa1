"""``merge_files`` and ``tmbmerge merge``: what a merge produces, and every input it must refuse.

- In every mode the output holds exactly the inputs' events (run, event, payload bytes), in
  the order the inputs were given, and its sidecar describes it truly (size, adler32 of the
  bytes on disk, counts, first/last event, runs, parents in order, times with offsets, mode).
- Refused inputs (an empty list, a foreign file, a 0-byte file, a directory, a missing or
  unreadable path, a file with no events, one file given twice, inputs of several runs)
  give their documented exit code, a message naming the file, and nothing in the destination.
- An existing output is kept unless ``--force``; a merge holding the output's lock makes a
  second one fail at once.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from datetime import datetime

import pytest
from merge_helpers import assert_nothing_written, concat_events

import engine
from engine.errors import (
    InconsistentInputs,
    InputError,
    InputNotFound,
    NotATmbFile,
    OutputExists,
    OutputLocked,
    TruncatedFile,
    UsageError,
)
from engine.merge import MODES, MergeSpec, merge_files
from engine.merge.lock import ExclusiveLock
from engine.metadata import read_sidecar, sidecar_path
from engine.verify import verify_file
from engine.writer import TmbWriter

pytestmark = pytest.mark.timeout(120)  # a hang fails here, not at the global limit

ADLER_RE = re.compile(r"^adler32:[0-9a-f]{8}$")


# -- what a merge produces --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_output_holds_exactly_the_inputs_events_in_the_given_order(
    mode, tmb_run, out_dir, read_event_list, leftovers, sha256_of
):
    inputs = [
        tmb_run[2],
        tmb_run[0],
        tmb_run[1],
        tmb_run[5],
    ]  # not partition order: order given wins
    before = {p: sha256_of(p) for p in tmb_run}
    out = out_dir / "merged.tmb"

    report = merge_files(inputs, out, MergeSpec(mode=mode))

    expected = concat_events(read_event_list, inputs)
    assert read_event_list(out) == expected
    assert (
        report.event_count == len(expected) == sum(engine.open_file(p).event_count for p in inputs)
    )
    assert report.verified is (mode != "fast")
    assert [i.path for i in report.inputs] == inputs and all(i.accepted for i in report.inputs)
    assert report.skipped == []
    assert {p: sha256_of(p) for p in tmb_run} == before, "inputs must be only read"
    assert leftovers(out_dir) == []
    assert sorted(os.listdir(out_dir)) == ["merged.tmb", "merged.tmb.json"]


@pytest.mark.parametrize("mode", MODES)
def test_merged_sidecar_describes_the_output(mode, tmb_run, out_dir, read_event_list):
    out = out_dir / "tmb_0000178000_mrg_p000-p003.tmb"
    inputs = tmb_run[:4]
    before = datetime.now().astimezone().replace(microsecond=0)

    report = merge_files(inputs, out, MergeSpec(mode=mode))

    md = read_sidecar(out)
    data = out.read_bytes()
    events = concat_events(read_event_list, inputs)
    numbers = [e for _, e, _ in events]
    assert md["file_name"] == out.name
    assert md["file_size"] == os.stat(out).st_size == len(data) == report.file_size
    assert md["checksum"] == [f"adler32:{zlib.adler32(data):08x}"] == [report.checksum]
    assert ADLER_RE.match(md["checksum"][0])
    assert md["event_count"] == len(events) == report.event_count
    assert md["first_event"] == min(numbers) and md["last_event"] == max(numbers)
    assert md["runs"] == [[178000, 0, "physics"]]
    assert md["data_tier"] == "thumbnail"
    assert md["file_format"] == "tmb"
    assert md["parents"] == [{"file_name": p.name} for p in inputs]
    assert md["application"] == {
        "family": "tmbmerge",
        "name": "tmbmerge",
        "version": engine.__version__,
    }
    start, end = datetime.fromisoformat(md["start_time"]), datetime.fromisoformat(md["end_time"])
    assert start.utcoffset() is not None and end.utcoffset() is not None
    assert before <= start <= end
    assert md["Merge.mode"] == mode
    assert md["Merge.skipped"] == []
    assert md["Merge.input_count"] == len(inputs)
    assert report.metadata == md
    # the output is a sound TMB file that agrees with its own sidecar, checked fast and deep
    for deep in (False, True):
        check = verify_file(out, deep=deep, metadata="auto")
        assert check.ok, check.error
        assert check.metadata_checked == "sidecar"
    with engine.open_file(out) as reader:
        assert reader.metadata["file_name"] == out.name
        assert reader.metadata["merge"]["inputs"] == [p.name for p in inputs]


def test_merge_json_report(cli, tmb_run, out_dir):
    out = out_dir / "m.tmb"
    result = cli("merge", *tmb_run, "-o", out, "--json")
    assert result.code == 0, result.err
    report = result.json()
    md = read_sidecar(out)
    assert report["output"] == str(out)
    assert report["mode"] == "safe" and report["verified"] is True and report["status"] == "merged"
    assert report["checksum"] == md["checksum"][0]
    assert report["file_size"] == md["file_size"] == out.stat().st_size
    assert report["event_count"] == md["event_count"] == sum(i["events"] for i in report["inputs"])
    assert [i["file"] for i in report["inputs"]] == [str(p) for p in tmb_run]
    for item, path in zip(report["inputs"], tmb_run, strict=True):
        assert item["accepted"] is True
        assert item["checksum"] == read_sidecar(path)["checksum"][0]
        assert item["file_size"] == path.stat().st_size
    assert report["skipped"] == []


def test_merge_text_report_and_api_reports_serialize(cli, tmb_run, out_dir):
    out = out_dir / "m.tmb"
    result = cli("merge", *tmb_run[:2], "-o", out)
    assert result.code == 0, result.err
    assert str(out) in result.out and read_sidecar(out)["checksum"][0] in result.out
    report = merge_files(tmb_run[2:], out_dir / "api.tmb")
    assert json.loads(json.dumps(report.to_dict()))["event_count"] == report.event_count


# -- inputs that must be refused ---------------------------------------------------------------


def test_empty_input_list(cli, out_dir, leftovers):
    out = out_dir / "m.tmb"
    with pytest.raises(UsageError):
        merge_files([], out)
    assert_nothing_written(out, leftovers)
    result = cli("merge", "-o", out)
    assert result.code == 2  # argparse: INPUT is required
    assert_nothing_written(out, leftovers)


def _not_tmb(path):
    path.write_bytes(b"ROOT file, honestly\n" * 50)


def _empty(path):
    path.write_bytes(b"")


def _directory(path):
    path.mkdir()


def _zero_events(path):
    with TmbWriter(path, metadata={"runs": [[178000, 0, "physics"]]}, fsync=False):
        pass


BAD_INPUTS = {
    # name: (make it, exit code, error class, words the message must hold)
    "not-tmb": (_not_tmb, 4, NotATmbFile, "not a TMB file"),
    "empty": (_empty, 5, TruncatedFile, "empty"),
    "directory": (_directory, 3, InputError, "directory"),
    "missing": (None, 3, InputNotFound, "no such file"),
    "no-events": (_zero_events, 6, InconsistentInputs, "no events"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_refused(kind, cli, tmb_run, out_dir, tmp_path, leftovers, sha256_of):
    make, code, error_class, words = BAD_INPUTS[kind]
    bad = tmp_path / f"bad_{kind}.tmb"
    if make is not None:
        make(bad)
    inputs = [tmb_run[0], bad, tmb_run[1]]
    before = [sha256_of(p) for p in (tmb_run[0], tmb_run[1])]
    out = out_dir / "m.tmb"

    result = cli("merge", *inputs, "-o", out)
    assert result.code == code, result.err
    assert str(bad) in result.err and words in result.err
    assert_nothing_written(out, leftovers)

    with pytest.raises(error_class) as caught:
        merge_files(inputs, out)
    assert caught.value.path == str(bad) and caught.value.exit_code == code
    assert_nothing_written(out, leftovers)
    assert [sha256_of(p) for p in (tmb_run[0], tmb_run[1])] == before


def test_unreadable_input(cli, tmb_run, out_dir, tmp_path, leftovers):
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop root from reading")
    locked_dir = tmp_path / "locked"
    locked_dir.mkdir()
    target = locked_dir / "tmb_0000178000_p009.tmb"
    target.write_bytes(tmb_run[0].read_bytes())
    os.chmod(locked_dir, 0)
    try:
        out = out_dir / "m.tmb"
        result = cli("merge", tmb_run[1], target, "-o", out)
        assert result.code == 3, result.err
        assert str(target) in result.err
        assert_nothing_written(out, leftovers)
    finally:
        os.chmod(locked_dir, 0o755)


def test_same_input_twice_by_path_and_by_symlink(cli, tmb_run, out_dir, tmp_path, leftovers):
    out = out_dir / "m.tmb"
    result = cli("merge", tmb_run[0], tmb_run[1], tmb_run[0], "-o", out)
    assert result.code == 6, result.err
    assert "twice" in result.err and str(tmb_run[0]) in result.err
    assert_nothing_written(out, leftovers)

    link = tmp_path / "alias.tmb"
    link.symlink_to(tmb_run[1])
    for mode in ("fast", "safe"):
        result = cli("merge", tmb_run[0], tmb_run[1], link, "-o", out, "--mode", mode)
        assert result.code == 6, result.err
        assert "twice" in result.err and str(link) in result.err and str(tmb_run[1]) in result.err
        assert_nothing_written(out, leftovers)


def test_mixed_runs_need_allow_mixed_runs(
    cli, tmb_run, tmb_file_factory, out_dir, tmp_path, read_event_list, leftovers
):
    other = tmb_file_factory(
        tmp_path / "other" / "tmb_0000178001_p000.tmb", run=178001, partition=0, first_event=1
    ).path
    out = out_dir / "m.tmb"
    for mode in MODES:
        result = cli("merge", tmb_run[0], other, "-o", out, "--mode", mode)
        assert result.code == 6, result.err
        assert (
            str(other) in result.err
            and "178001" in result.err
            and "--allow-mixed-runs" in result.err
        )
        assert_nothing_written(out, leftovers)

    result = cli("merge", tmb_run[0], other, "-o", out, "--allow-mixed-runs")
    assert result.code == 0, result.err
    assert read_event_list(out) == read_event_list(tmb_run[0]) + read_event_list(other)
    md = read_sidecar(out)
    assert md["runs"] == [[178000, 0, "physics"], [178001, 0, "physics"]]
    assert verify_file(out, metadata="auto").ok


# -- the destination ---------------------------------------------------------------------------


def test_existing_output_is_kept_without_force_and_replaced_with_it(
    cli, tmb_run, out_dir, read_event_list, sha256_of, leftovers
):
    out = out_dir / "m.tmb"
    assert cli("merge", *tmb_run[:2], "-o", out).code == 0
    kept = (sha256_of(out), sha256_of(sidecar_path(out)), out.stat().st_ino)

    for mode in MODES:
        result = cli("merge", *tmb_run[2:4], "-o", out, "--mode", mode)
        assert result.code == 7, result.err
        assert str(out) in result.err and "--force" in result.err
        assert (sha256_of(out), sha256_of(sidecar_path(out)), out.stat().st_ino) == kept
        assert leftovers(out_dir) == []
    with pytest.raises(OutputExists):
        merge_files(tmb_run[2:4], out)

    result = cli("merge", *tmb_run[2:4], "-o", out, "--force")
    assert result.code == 0, result.err
    assert read_event_list(out) == read_event_list(tmb_run[2]) + read_event_list(tmb_run[3])
    assert read_sidecar(out)["parents"] == [{"file_name": p.name} for p in tmb_run[2:4]]
    assert verify_file(out, metadata="auto").ok
    assert sorted(os.listdir(out_dir)) == ["m.tmb", "m.tmb.json"]


def test_missing_output_folder(tmb_run, tmp_path):
    with pytest.raises(UsageError):
        merge_files(tmb_run[:1], tmp_path / "nowhere" / "m.tmb")
    assert not (tmp_path / "nowhere").exists()


def test_a_second_merge_of_a_locked_output_fails_at_once(cli, tmb_run, out_dir, leftovers):
    out = out_dir / "m.tmb"
    with ExclusiveLock(out):
        # the lock is held until this block ends: a merge that waited for it would never return
        # (the suite's timeout fails it), so returning at all proves it did not wait
        result = cli("merge", *tmb_run[:2], "-o", out)
        assert result.code == 7, result.err
        assert (
            "another merge" in result.err
            and str(out) in result.err
            and str(os.getpid()) in result.err
        )
        with pytest.raises(OutputLocked):
            merge_files(tmb_run[:2], out, MergeSpec(mode="fast"))
        assert not out.exists() and not sidecar_path(out).exists()
        assert leftovers(out_dir) == [f".{out.name}.lock"]  # ours, still held
    assert leftovers(out_dir) == []
    assert cli("merge", *tmb_run[:2], "-o", out).code == 0  # free again


@pytest.mark.parametrize("command", ["merge", "verify"])
def test_a_fifo_is_refused_at_once_not_waited_on(cli, tmb_run, tmp_path, command):
    """Opening a FIFO blocks until someone writes to it: it must be refused before it is opened."""
    fifo = tmp_path / "pipe.tmb"
    os.mkfifo(fifo)
    args = [fifo, tmb_run[0], "-o", tmp_path / "out.tmb"] if command == "merge" else [fifo]
    result = cli(command, *args)
    assert result.code == 3, result.err
    assert f"{fifo}: is a FIFO, not a regular file" in result.err
    assert not (tmp_path / "out.tmb").exists()


@pytest.mark.parametrize(
    "option", [["--jobs", "0"], ["--jobs", "-1"], ["--max-events", "0"], ["--jobs", "two"]]
)
def test_counts_must_be_positive_whole_numbers(cli, tmb_run, tmp_path, option):
    result = cli("merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "out", *option)
    assert result.code == 2
    assert option[0] in result.err and ("at least 1" in result.err or "whole number" in result.err)
    assert not (tmp_path / "out").exists()
