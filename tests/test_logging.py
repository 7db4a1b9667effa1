"""The library logs through ``logging`` without configuring it; the command shows the logs by -v/-q;
merge-run hands each output to its caller as soon as it is published."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import re
from pathlib import Path

import engine
from engine.merge import MergeSpec, merge_run

ROOT = Path(__file__).resolve().parent.parent


def test_the_library_never_configures_logging():
    """Only the worker-process bridge (engine/logbridge.py) touches a logging configuration, and
    only in worker processes of its own."""
    before = {name: list(logging.getLogger(name).handlers) for name in ("", "engine")}
    for module in pkgutil.walk_packages(engine.__path__, "engine."):
        importlib.import_module(module.name)
    assert {name: list(logging.getLogger(name).handlers) for name in ("", "engine")} == before
    configuring = [
        path.relative_to(ROOT).as_posix()
        for path in list((ROOT / "engine").rglob("*.py"))
        + list((ROOT / "bindings" / "catalog").rglob("*.py"))
        if re.search(r"basicConfig|addHandler|setLevel|logging\.config", path.read_text())
    ]
    assert configuring == ["engine/logbridge.py"]


def _merge_in_workers(tmb_run, tmp_path, caplog, level: int):
    """merge-run --jobs 2 (spawned worker processes) with the parent's "engine" logger at
    ``level``: the run, and the records that came from the workers (their process id kept)."""
    caplog.set_level(level, logger="engine")
    total = sum(p.stat().st_size for p in tmb_run)
    run = merge_run(
        [tmb_run[0].parent],
        tmp_path / "out",
        target_size=total // 2,
        spec=MergeSpec(mode="fast"),
        jobs=2,
    )
    assert run.ok and len(run.outputs) >= 2
    return run, [r for r in caplog.records if r.process != os.getpid()]


def test_a_worker_process_logs_through_the_parents_logging(tmb_run, tmp_path, caplog):
    """A worker's records reach the parent's loggers of the same name."""
    run, from_workers = _merge_in_workers(tmb_run, tmp_path, caplog, logging.DEBUG)
    merging = [r.getMessage() for r in from_workers if r.name == "engine.merge.pipeline"]
    names = sorted(o.output.name for o in run.outputs)
    assert sorted(Path(m.split(": merging")[0]).name for m in merging if ": merging" in m) == names
    assert all(r.levelno >= logging.DEBUG and r.name.startswith("engine.") for r in from_workers)


def test_a_worker_logs_at_its_parents_level(tmb_run, tmp_path, caplog):
    run, from_workers = _merge_in_workers(tmb_run, tmp_path, caplog, logging.INFO)
    published = [r.getMessage() for r in from_workers if "published" in r.getMessage()]
    assert len(published) == len(run.outputs)
    # each output's count of inputs takes the number of its noun ("1 input", "3 inputs")
    assert all(re.search(r"events from (1 input|[2-9] inputs)$", m) for m in published)
    assert {r.levelno for r in from_workers} == {logging.INFO}


def test_merge_run_logs_each_output_and_streams_it(tmb_run, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="engine")
    out_dir = tmp_path / "out"
    seen = []

    def on_output(report):
        # called as each output is published: the later ones do not exist yet (one at a time,
        # in order)
        seen.append((report.output.name, sorted(p.name for p in out_dir.glob("*.tmb"))))

    total = sum(p.stat().st_size for p in tmb_run)
    run = merge_run(
        [tmb_run[0].parent],
        out_dir,
        target_size=total // 2,
        spec=MergeSpec(mode="fast"),
        jobs=1,
        on_output=on_output,
    )
    names = sorted(o.output.name for o in run.outputs)
    assert run.ok and len(names) >= 2
    assert seen == [(name, names[: i + 1]) for i, name in enumerate(names)]
    logged = [r.getMessage() for r in caplog.records if r.name == "engine.merge.run"]
    assert [m.split(":")[0] for m in logged] == names
    assert all(r.name.startswith("engine.") for r in caplog.records)


def test_merge_run_streams_failures_as_they_happen(tmb_run, tmp_path):
    data = bytearray(tmb_run[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # a block's bytes: found while merging
    tmb_run[1].write_bytes(bytes(data))
    failures = []
    run = merge_run(
        [tmb_run[0].parent],
        tmp_path / "out",
        spec=MergeSpec(mode="fast"),
        jobs=1,
        on_failure=failures.append,
    )
    assert failures == run.failures and len(failures) == 1


def test_cli_verbosity_maps_onto_logging(cli, tmb_run, tmp_path):
    quiet_by_default = cli("merge", *tmb_run, "-o", tmp_path / "a.tmb")
    assert quiet_by_default.code == 0 and quiet_by_default.err == ""
    verbose = cli("merge", *tmb_run, "-o", tmp_path / "b.tmb", "-v")
    assert verbose.code == 0
    assert (
        f"tmbmerge: info: {tmp_path / 'b.tmb'}: published, 240 events from 6 inputs\n"
        in verbose.err
    )
    assert "tmbmerge: debug:" not in verbose.err
    details = cli("merge", *tmb_run, "-o", tmp_path / "c.tmb", "-vv")
    assert re.search(
        r"tmbmerge: debug: \S+ \S+ engine\.merge\.pipeline: .*c\.tmb: merging 6 inputs", details.err
    )
    silent = cli("merge", *tmb_run, "-o", tmp_path / "d.tmb", "-q")
    assert (silent.code, silent.out, silent.err) == (0, "", "")
    # the command leaves logging as it found it
    assert logging.getLogger("engine").handlers == [] and logging.getLogger("engine").propagate


def test_merge_run_prints_a_line_per_output_before_the_run_ends(
    cli, capsys, tmb_run, tmp_path, monkeypatch
):
    """The lines come while the run goes on, so a log file follows it: the first output's line is
    out before the second output is merged."""
    import engine.merge.run as run_module

    printed_before = []
    real = run_module.merge_files

    def look_then_merge(*args, **kwargs):
        printed_before.append(capsys.readouterr().out)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "merge_files", look_then_merge)
    total = sum(p.stat().st_size for p in tmb_run)
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--target-size",
        total // 2,
        "--jobs",
        "1",
        "--mode",
        "fast",
    )
    assert result.code == 0, result.err
    assert printed_before[0] == ""
    assert "_mrg_p000-p" in printed_before[1] and "inputs," in printed_before[1]
    assert result.out.startswith(str(tmp_path / "out" / "tmb_0000178000_mrg_p"))
