"""Nothing lost, nothing duplicated: the invariants, checked after every command of a matrix of
mistakes and faults (issue 9).

After each command, ``assert_invariants`` requires:

1. every input (data file and sidecar) is byte-identical to what it was, unless it was retired
   under the rule: the journal records it as retired by an output that it holds (``accepted``),
   that output is at its final name and verifies against its sidecar, the catalogue's record of
   the output carries the output's checksum and lists the input as a parent, and a moved input
   is byte-identical at its destination;
2. across the run's published outputs no event appears twice, and each output holds exactly the
   events of the parents its sidecar names, in order; once the run is complete, every
   input event is in exactly one output;
3. nothing is at a final name unless it verifies (every block digest, adler32, size and event
   count against its sidecar); once the run is complete, no temporary or lock file is left.

The matrix: ``kill -9`` of ``merge-run`` at random moments (seeded delays after the run begins,
writes an output, publishes one, retires an input), ENOSPC while writing an
output, a catalogue failing in the middle of declaring, a catalogue whose record of an output
does not match it, an input swapped between planning and merging, and the mistakes of the
issue's findings (an output folder that is the input folder, run twice; a damaged input with
--skip-bad and retirement; a damaged published output before a retiring rerun; an edited journal
row).  Each fault is followed by a rerun without it, which must complete the run.  Small generated
runs keep the whole file to a few tens of seconds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from merge_helpers import flip_payload_byte, wait_for

from bindings.catalog import open_catalog
from engine.checksums import adler32_from_checksums, format_adler32
from engine.errors import CatalogUnavailable
from engine.merge import MergeSpec, merge_run
from engine.merge.journal import JOURNAL_NAME, Journal
from engine.metadata import read_sidecar, sidecar_path
from engine.verify import verify_file

pytestmark = pytest.mark.timeout(180)

KILL_SEED = 20261129
KILLS = 4


# -- the invariants --------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(path) -> list[tuple[int, int]]:
    from engine import open_file

    with open_file(path) as reader:
        return list(zip(reader.events.run.tolist(), reader.events.event.tolist(), strict=True))


class Ledger:
    """The inputs as they were before any command: their bytes and their events."""

    def __init__(self, inputs, catalog_url: str | None = None):
        self.inputs = [Path(p) for p in inputs]
        self.digests = {
            item: _sha(item) for p in self.inputs for item in (p, sidecar_path(p)) if item.exists()
        }
        self.events = {str(p): _keys(p) for p in self.inputs}
        self.events_by_name = {p.name: self.events[str(p)] for p in self.inputs}
        self.catalog_url = catalog_url

    def assert_invariants(self, out_dir: Path, *, complete: bool = False, skipped=()) -> None:
        journal = Journal.open_existing(out_dir) if out_dir.is_dir() else None
        entries = {e.name: e for e in journal.entries()} if journal else {}
        retired = {row["input"]: row for row in journal.retired()} if journal else {}
        if journal:
            journal.close()
        self._inputs_intact_unless_retired(out_dir, entries, retired)
        self._outputs_verified_each_event_once(out_dir, entries, complete, skipped)
        if complete:
            names = sorted(
                n
                for n in os.listdir(out_dir)
                if ".tmbpart-" in n or (n.endswith(".lock") and n != ".merge-run.lock")
            )
            assert names == [], f"left behind: {names}"

    def _inputs_intact_unless_retired(self, out_dir, entries, retired) -> None:
        for path, digest in self.digests.items():
            if path.exists():
                assert _sha(path) == digest, f"{path} was modified"
                continue
            data = path if path in self.inputs else path.with_name(path.name[: -len(".json")])
            row = retired.get(str(data))
            assert row is not None, f"{path} is gone but was never retired"
            entry = entries[row["output"]]
            assert entry.state in ("declared", "retired"), (
                f"{path} retired by an output that is {entry.state}"
            )
            assert str(data) in [a["path"] for a in entry.accepted], (
                f"{path} retired by an output not holding it"
            )
            output = out_dir / entry.name
            check = verify_file(output, metadata="auto")
            assert check.ok, f"{path} retired but its output does not verify: {check.error}"
            with open_catalog(self.catalog_url) as catalog:
                record = catalog.get(entry.name)
                assert format_adler32(adler32_from_checksums(record["checksum"])) == entry.checksum
                assert data.name in catalog.parents(entry.name)
            if row["action"] == "move":
                moved = Path(row["destination"]).with_name(path.name)
                assert _sha(moved) == digest, f"{path} was changed on its way to {moved}"

    def _outputs_verified_each_event_once(self, out_dir, entries, complete, skipped) -> None:
        published = (
            sorted(p for p in out_dir.glob("*.tmb") if not p.name.startswith("."))
            if out_dir.is_dir()
            else []
        )
        seen: Counter = Counter()
        for output in published:
            check = verify_file(output, metadata="auto")
            assert check.ok, f"{output} is at its final name but does not verify: {check.error}"
            keys = _keys(output)
            seen.update(keys)
            parents = [parent["file_name"] for parent in read_sidecar(output)["parents"]]
            held = [key for name in parents for key in self.events_by_name[name]]
            assert keys == held, f"{output} does not hold exactly its parents' events, in order"
        twice = [key for key, count in seen.items() if count > 1]
        assert not twice, f"events published twice: {twice[:5]}"
        if complete:
            expected = Counter(
                key
                for path, keys in self.events.items()
                if path not in map(str, skipped)
                for key in keys
            )
            assert seen == expected, "the complete run does not hold every input event exactly once"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_catalogue_from_the_environment(monkeypatch):
    monkeypatch.delenv("TMBMERGE_CATALOG", raising=False)


@pytest.fixture
def catalogued_run(tmb_run, tmp_path, cli):
    """The small run, imported into a sqlite catalogue; returns (inputs, catalogue URL)."""
    url = f"sqlite://{tmp_path / 'cat.db'}"
    result = cli("catalog", "import", tmb_run[0].parent, "--declare-parents", "--catalog", url)
    assert result.code == 0, result.err
    return tmb_run, url


def three_outputs(paths) -> int:
    sizes = sorted(p.stat().st_size for p in paths)
    return sizes[-1] + sizes[-2] + sizes[0] // 2


def retiring_spec(url: str, **kwargs) -> MergeSpec:
    return MergeSpec(catalog=url, declare=True, fsync=False, **kwargs)


# -- faults ----------------------------------------------------------------------------------------


def test_kill_9_at_random_moments_of_a_retiring_merge_run(catalogued_run, tmp_path):
    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out, retired = tmp_path / "out", tmp_path / "retired"
    target = three_outputs(inputs)
    command = [
        sys.executable,
        "-m",
        "bindings.cli",
        "merge-run",
        str(inputs[0].parent),
        "--out-dir",
        str(out),
        "--catalog",
        url,
        "--declare",
        "--retire-inputs",
        "--retire-dir",
        str(retired),
        "--jobs",
        "1",
        "--target-size",
        str(target),
        "--quiet",
    ]
    moments = random.Random(KILL_SEED)
    states = []

    def published_since(when):
        return lambda: any(p.stat().st_mtime > when for p in out.glob("*.tmb"))

    for stage in range(KILLS):
        began = time.time()
        # the moments: a few ms (drawn from a seeded generator) after the run has begun, while it
        # writes a temporary output, after it published one, after it retired an input
        reached = [
            lambda: (out / JOURNAL_NAME).exists(),
            lambda: out.is_dir() and any(".tmbpart-" in n for n in os.listdir(out)),
            published_since(began),
            lambda: retired.is_dir() and any(retired.iterdir()),
        ][stage]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(
                lambda process=process, reached=reached: process.poll() is not None or reached(),
                interval=0.001,
                what="the moment to kill",
            )
            time.sleep(moments.uniform(0.0, 0.03))
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=60)
        ledger.assert_invariants(out)
        states.append(
            (
                sorted(n for n in os.listdir(out) if n.endswith(".tmb")),
                sum(p.exists() for p in inputs),
            )
        )
    assert len(set(map(repr, states))) > 1, f"every kill came at the same point: {states}"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    ledger.assert_invariants(out, complete=True)
    assert not any(p.exists() for p in inputs), "the completed run retires every input"


def test_enospc_while_writing_an_output(catalogued_run, tmp_path, monkeypatch):
    from engine import writer

    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    target = three_outputs(inputs)

    class FullDisk:
        """``os`` for the writer: the disk fills up after 400 kB, in the second output."""

        written = 0

        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            FullDisk.written += len(data)
            if FullDisk.written > 400_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return os.write(fd, data)

    monkeypatch.setattr(writer, "os", FullDisk())
    report = merge_run(
        [inputs[0].parent],
        out,
        target_size=target,
        spec=retiring_spec(url),
        retire="move",
        retire_dir=tmp_path / "retired",
    )
    assert report.failures, "the full disk is reported"
    ledger.assert_invariants(out)
    monkeypatch.undo()
    report = merge_run(
        [inputs[0].parent],
        out,
        target_size=target,
        spec=retiring_spec(url),
        retire="move",
        retire_dir=tmp_path / "retired",
    )
    assert report.ok, report.failures
    ledger.assert_invariants(out, complete=True)


def test_catalogue_failing_in_the_middle_of_declaring(catalogued_run, tmp_path, monkeypatch):
    from engine.merge.catalog import MergeCatalog

    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    target = three_outputs(inputs)
    real = MergeCatalog.declare
    calls = []

    def declare(self, record):
        calls.append(record["file_name"])
        if len(calls) == 2:
            raise CatalogUnavailable(
                "catalogue unavailable: 503 Service Unavailable", path=record["file_name"]
            )
        return real(self, record)

    monkeypatch.setattr(MergeCatalog, "declare", declare)
    report = merge_run(
        [inputs[0].parent], out, target_size=target, spec=retiring_spec(url), retire="delete"
    )
    assert [f["exit_code"] for f in report.failures] == [8]
    ledger.assert_invariants(out)
    assert sum(p.exists() for p in inputs) == 2, "the inputs of the undeclared output stay"
    monkeypatch.undo()
    report = merge_run(
        [inputs[0].parent], out, target_size=target, spec=retiring_spec(url), retire="delete"
    )
    assert report.ok, report.failures
    ledger.assert_invariants(out, complete=True)


def test_a_catalogue_record_that_does_not_match_the_output_retires_nothing(
    catalogued_run, tmp_path
):
    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    report = merge_run([inputs[0].parent], out, spec=retiring_spec(url))
    assert report.ok, report.failures
    [output] = report.outputs
    with sqlite3.connect(tmp_path / "cat.db") as db:  # the catalogue now says another size
        db.execute(
            "UPDATE files SET file_size = file_size + 1 WHERE file_name = ?", (output.output.name,)
        )
    report = merge_run([inputs[0].parent], out, spec=retiring_spec(url), retire="delete")
    assert [f["exit_code"] for f in report.failures] == [8]
    assert all(p.exists() for p in inputs)
    ledger.assert_invariants(out)


# -- mistakes --------------------------------------------------------------------------------------


def test_output_folder_is_the_input_folder_run_twice(tmb_run, cli):
    folder = tmb_run[0].parent
    ledger = Ledger(tmb_run)
    for _ in range(2):
        result = cli("merge-run", folder, "--out-dir", folder, "--quiet")
        assert result.code == 0, result.err
        ledger._inputs_intact_unless_retired(folder, {}, {})  # nothing retires here: all intact
    published = [p for p in folder.glob("*.tmb") if p not in tmb_run]
    assert len(published) == 1
    assert Counter(_keys(published[0])) == Counter(
        k for keys in ledger.events.values() for k in keys
    )


def test_merge_onto_an_input_with_force(tmb_run, cli, tmp_path):
    ledger = Ledger(tmb_run)
    alias = tmp_path / "alias.tmb"
    alias.symlink_to(tmb_run[0])
    for output in (tmb_run[0], alias):
        assert cli("merge", *tmb_run, "-o", output, "--force", "--quiet").code == 7
        ledger._inputs_intact_unless_retired(tmp_path, {}, {})


def test_damaged_input_skipped_and_retiring(catalogued_run, tmp_path):
    inputs, url = catalogued_run
    damaged = inputs[3]
    flip_payload_byte(damaged, block=1)
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    report = merge_run(
        [inputs[0].parent], out, spec=retiring_spec(url, skip_bad=True), retire="delete"
    )
    assert report.ok, report.failures
    assert damaged.exists()
    ledger.assert_invariants(out, complete=True, skipped=[damaged])


def test_damaged_output_before_a_retiring_rerun(catalogued_run, tmp_path):
    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    target = three_outputs(inputs)
    assert merge_run([inputs[0].parent], out, target_size=target, spec=retiring_spec(url)).ok
    victim = sorted(out.glob("*.tmb"))[1]
    flip_payload_byte(victim, block=1)
    report = merge_run(
        [inputs[0].parent], out, target_size=target, spec=retiring_spec(url), retire="delete"
    )
    assert [f["output"] for f in report.failures] == [victim.name]
    assert [f["exit_code"] for f in report.failures] == [5]
    victim.unlink()  # the damaged output is not counted as published
    sidecar_path(victim).unlink()
    ledger.assert_invariants(out)
    assert sum(p.exists() for p in inputs) == 2, "only the damaged output's inputs stay"


def test_edited_journal_row(catalogued_run, tmp_path, tmb_file_factory):
    inputs, url = catalogued_run
    victim = tmp_path / "precious" / "tmb_0000179000_p000.tmb"
    tmb_file_factory(victim, run=179000, partition=0, first_event=1)
    ledger = Ledger(inputs + [victim], url)
    out = tmp_path / "out"
    assert merge_run([inputs[0].parent], out, spec=retiring_spec(url)).ok
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        for column in ("inputs", "identities", "accepted"):
            db.execute(
                f"UPDATE outputs SET {column} = replace({column}, ?, ?)",
                (str(inputs[0]), str(victim)),
            )
    report = merge_run(inputs[1:], out, spec=retiring_spec(url), retire="delete")
    assert report.failures
    ledger.assert_invariants(out)
    assert victim.exists() and all(p.exists() for p in inputs)


def test_input_swapped_between_planning_and_merging_of_a_retiring_run(
    catalogued_run, tmp_path, monkeypatch
):
    """Another file (the same bytes, a new inode) takes an input's name after planning: its output
    fails (exit 3), nothing of it is published or retired; the others go on; a rerun completes."""
    from engine.merge import run as merge_run_module

    inputs, url = catalogued_run
    ledger = Ledger(inputs, url)
    out = tmp_path / "out"
    target = three_outputs(inputs)
    victim = inputs[2]
    real = merge_run_module.plan_run

    def plan_then_swap(*args, **kwargs):
        plan = real(*args, **kwargs)
        copy = victim.with_name(".swap")
        copy.write_bytes(victim.read_bytes())
        os.replace(copy, victim)
        return plan

    monkeypatch.setattr(merge_run_module, "plan_run", plan_then_swap)
    report = merge_run(
        [inputs[0].parent], out, target_size=target, spec=retiring_spec(url), retire="delete"
    )
    assert [(f["exit_code"], f["path"]) for f in report.failures] == [(3, str(victim))]
    ledger.assert_invariants(out)
    assert [p for p in inputs if p.exists()] == inputs[2:4], "only the failed output's inputs stay"
    monkeypatch.undo()
    report = merge_run(
        [inputs[0].parent], out, target_size=target, spec=retiring_spec(url), retire="delete"
    )
    assert report.ok, report.failures
    ledger.assert_invariants(out, complete=True)
