"""``tmbmerge bench`` end to end on a tiny run: it finishes, reports every figure, and leaves no
data behind, also when stopped with SIGTERM half-way.  No timing is asserted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
from json_shapes import assert_documented

from bindings.cli import main
from engine.benchmark import figures as F


def test_quick_bench_reports_every_figure_and_cleans_up(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "report"
    data.mkdir()
    code = main(
        [
            "bench",
            "--quick",
            "--size",
            "16MiB",
            "--files",
            "4",
            "--jobs",
            "2",
            "--dir",
            str(data),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    assert list(data.iterdir()) == []  # the generated run and every output are gone
    report = json.loads((out / "bench.json").read_text())
    printed = json.loads(capsys.readouterr().out)  # --json: the same report on stdout
    assert_documented("bench", printed)
    assert printed.pop("written") == {
        kind: str(out / f"bench.{kind}") for kind in ("json", "md", "png")
    }
    assert printed == report
    expected = {
        F.STORAGE_WRITE,
        F.STORAGE_READ,
        F.STORAGE_READ_CACHED,
        F.STORAGE_COPY,
        F.STORAGE_COPY_STREAMED,
        F.REENCODE,
        F.XXH3,
        F.ADLER_NG,
        F.ADLER_ZLIB,
        F.ZSTD_COMPRESS,
        F.ZSTD_DECOMPRESS,
        F.ZSTD_ALL_CORES,
    }
    expected |= {F.merge_key(mode, jobs) for mode in F.MODES for jobs in (1, 2)}
    assert set(report["figures"]) == expected
    assert all(
        f["value"] > 0 and f["unit"] == "B/s" and f["on"] for f in report["figures"].values()
    )
    events = report["data"]["events"]
    for mode in F.MODES:
        assert report["figures"][F.merge_key(mode, 1)]["events"] == events
        assert report["figures"][F.merge_key(mode, 1)]["outputs"] == 1
        assert report["figures"][F.merge_key(mode, 2)]["outputs"] >= 2
        assert 0 < report["memory"][F.merge_key(mode, 1)]["peak_rss_bytes"] < 2**31
    assert set(report["ratios"]) >= {t.name for t in F.TARGETS} | {
        "fast_vs_streamed_copy",
        "safe_vs_streamed_copy",
    }
    assert all(report["ratios"][f"{m}_vs_streamed_copy"]["value"] > 0 for m in ("fast", "safe"))
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["tmbmerge"]
    assert report["settings"]["quick"] is True and report["data"]["files"] == 4
    assert (out / "bench.md").read_text().startswith("# tmbmerge bench")
    assert (out / "bench.png").stat().st_size > 10_000


def test_bench_refuses_a_missing_folder(tmp_path, capsys):
    assert (
        main(["bench", "--quick", "--dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
        == 2
    )
    assert "--dir" in capsys.readouterr().err


def _workers_in(folder) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "engine.benchmark.worker" in cmdline and str(folder) in cmdline:
            found.append(proc)
    return found


def test_sigterm_mid_measurement_removes_the_data_and_the_worker(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bindings.cli",
            "bench",
            "--quick",
            "--size",
            "32MiB",
            "--files",
            "4",
            "--dir",
            str(data),
            "--out",
            str(tmp_path / "report"),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _workers_in(data):  # wait until a measurement process is running
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no measurement started within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert list(data.iterdir()) == []
    assert not (tmp_path / "report").exists()
    deadline = time.monotonic() + 10
    while _workers_in(data) and time.monotonic() < deadline:  # PDEATHSIG / terminate: gone promptly
        time.sleep(0.1)
    assert _workers_in(data) == []


@pytest.mark.parametrize("size", ["0", "lots"])
def test_bench_refuses_bad_sizes(tmp_path, size):
    assert (
        main(
            [
                "bench",
                "--size",
                size,
                "--dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 2
    )
    assert list(tmp_path.iterdir()) == []
