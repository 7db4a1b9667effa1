"""bench reports: figures from samples, bench.json/bench.md/bench.png from a canned report, and
``tmbmerge spec`` on that report.  No measurement runs here: the numbers are made up, chosen so
every ratio can be checked by hand."""

from __future__ import annotations

import json
import struct

import pytest
from json_shapes import assert_documented

from bindings.cli import main
from engine.benchmark import figures as F
from engine.benchmark.report import load_report, render_markdown, write_report
from engine.benchmark.runner import build_figures, build_memory, build_ratios
from engine.errors import MetadataError

GB = 10**9


def sample(seconds, nbytes=GB, **extra):
    return {"seconds": seconds, "bytes": nbytes, **extra}


def canned_samples():
    """Per-round samples of every step, 3 rounds, on a 1 GB run (rates are 1 GB / seconds)."""

    def merge(s, rss, **e):
        return [sample(x, output_bytes=GB, peak_rss_bytes=rss, input_resident=1.0, **e) for x in s]

    return {
        "storage": [
            {
                "write": sample(s),
                "read_cold": sample(
                    0.5, method="posix_fadvise(DONTNEED)", resident_fraction=0.0, cold=True
                ),
                "read_cached": sample(0.2),
            }
            for s in (1.25, 1.0, 1.5)
        ],  # write: 800 MB/s median
        F.STORAGE_COPY: [
            sample(s, input_resident=1.0) for s in (2.0, 2.5, 2.2)
        ],  # copy: 1e9/2.2 = 454.5 MB/s
        F.merge_key("fast", 1): merge([2.4, 2.5, 2.6], 80e6),  # 400 MB/s -> 0.88x copy
        F.merge_key("safe", 1): merge([3.0, 3.2, 3.1], 90e6),
        F.merge_key("deep", 1): merge([5.0, 4.0, 4.5], 250e6, warmup_seconds=0.9),  # 222.2 MB/s
        F.merge_key("fast", 2): merge([2.0, 2.0, 2.0], 70e6, tree_peak_rss_bytes=200e6),
        F.merge_key("safe", 2): merge([2.5, 2.5, 2.5], 75e6, tree_peak_rss_bytes=210e6),
        F.merge_key("deep", 2): merge([4.0, 4.0, 4.0], 260e6, tree_peak_rss_bytes=600e6),
        F.REENCODE: [sample(20.0, peak_rss_bytes=200e6)] * 3,  # 50 MB/s
        F.ZSTD_ALL_CORES: [sample(1.0, 0.9 * GB)] * 3,  # 900 MB/s of stored bytes
        "codecs": [
            {
                name: sample(0.1, nbytes)
                for name, nbytes in (
                    ("xxh3", 2 * GB),
                    ("adler32_zlib_ng", GB),
                    ("adler32_zlib", 0.25 * GB),
                    ("zstd_compress", 0.03 * GB),
                    ("zstd_decompress", 0.06 * GB),
                )
            }
        ]
        * 3,
    }


def canned_report():
    figures = build_figures(canned_samples(), 2)
    return {
        "format": "tmbmerge-bench/1",
        "created": "2026-11-29T03:00:00+00:00",
        "command": "tmbmerge bench --size 1GB",
        "settings": {
            "size": GB,
            "directory": "/data",
            "files": 30,
            "rounds": 3,
            "quick": False,
            "jobs": 2,
            "sample_bytes": 64 << 20,
        },
        "machine": {
            "hostname": "m",
            "cpu_model": "Test CPU",
            "cores": 2,
            "memory_bytes": 24 * 2**30,
            "kernel": "6",
            "directory": "/data",
            "filesystem": "ext4",
            "mount": None,
            "load_average_at_start": [0.1, 0.1, 0.1],
            "load_average_at_end": [0.5, 0.2, 0.1],
            "versions": {"python": "3.11.7", "tmbmerge": "0.1.0"},
        },
        "data": {
            "directory": "/data/run",
            "files": 30,
            "bytes": GB,
            "events": 88_000,
            "run": 178000,
            "mean_file_bytes": GB // 30,
            "generator": "test",
        },
        "figures": figures,
        "ratios": build_ratios(figures, 2),
        "memory": build_memory(figures),
        "elapsed_seconds": 100.0,
    }


def test_figures_are_medians_with_their_baseline_ratio():
    figures = build_figures(canned_samples(), 2)
    assert figures[F.STORAGE_WRITE]["value"] == pytest.approx(GB / 1.25)
    copy = figures[F.STORAGE_COPY]
    assert copy["value"] == pytest.approx(GB / 2.2)
    assert copy["baseline"] == F.STORAGE_WRITE and copy["ratio"] == pytest.approx(
        (GB / 2.2) / (GB / 1.25)
    )
    fast = figures[F.merge_key("fast", 1)]
    assert fast["value"] == pytest.approx(400e6) and fast["ratio"] == pytest.approx(
        400e6 / (GB / 2.2)
    )
    assert (fast["min"], fast["max"]) == (pytest.approx(GB / 2.6), pytest.approx(GB / 2.4))
    assert fast["peak_rss_bytes"] == 80e6 and fast["input_resident"] == 1.0
    assert figures[F.merge_key("deep", 1)]["warmup_seconds"] == 0.9
    assert figures[F.ADLER_ZLIB]["baseline"] == F.ADLER_NG
    assert figures[F.ADLER_ZLIB]["ratio"] == pytest.approx(0.25)
    assert figures[F.ZSTD_ALL_CORES]["ratio"] == pytest.approx(900e6 / 600e6)
    assert figures[F.STORAGE_READ]["cache_state"] == "cold"


def test_ratios_and_memory_against_targets():
    figures = build_figures(canned_samples(), 2)
    ratios = build_ratios(figures, 2)
    assert ratios["fast_vs_copy"]["value"] == pytest.approx(400e6 / (GB / 2.2))  # 0.88
    assert ratios["fast_vs_copy"]["met"] is False
    assert ratios["fast_vs_copy"]["best"] == pytest.approx(
        (GB / 2.4) / (GB / 2.0)
    )  # best rounds: 0.83
    assert ratios["deep_vs_reencode"]["value"] == pytest.approx((GB / 4.5) / 50e6)  # 4.44
    assert ratios["deep_vs_reencode"]["met"] is True
    assert ratios["deep_vs_zstd_all_cores"]["value"] == pytest.approx((GB / 4.5) / 900e6)  # 0.247
    assert ratios["deep_vs_zstd_all_cores"]["met"] is False
    assert ratios["fast_jobs2_vs_jobs1"]["value"] == pytest.approx(500e6 / 400e6)
    assert ratios["fast_jobs2_vs_jobs1"]["met"] is None
    memory = build_memory(figures)
    assert memory[F.merge_key("deep", 1)] == {
        "peak_rss_bytes": 250e6,
        "tree_peak_rss_bytes": None,
        "limit_bytes": F.PEAK_RSS_LIMIT,
        "met": True,
    }
    assert memory[F.merge_key("deep", 2)]["tree_peak_rss_bytes"] == 600e6
    assert memory[F.merge_key("deep", 2)]["met"] is None


def test_report_files_round_trip(tmp_path):
    report = canned_report()
    paths = write_report(report, tmp_path / "out")
    assert load_report(paths["json"]) == json.loads(json.dumps(report))
    md = paths["md"].read_text()
    assert "| `merge.fast.jobs1` | 400.0 MB/s | storage.copy (454.5 MB/s) | 0.88x |" in md
    assert (
        "| fast_vs_copy | `merge.fast.jobs1` / `storage.copy` | 0.88x | 0.83x | >= 0.9 | **NO** |"
        in md
    )
    assert (
        "| deep_vs_reencode | `merge.deep.jobs1` / `reencode` | 4.44x | 5.00x | >= 3 | yes |" in md
    )
    assert "Test CPU, 2 cores, 24 GiB, ext4 at /data" in md
    assert "was **cold**" in md
    assert "| `merge.deep.jobs2` | 248.0 MiB | 572.2 MiB | — | — |" in md


def test_plot_is_a_png_of_the_expected_size(tmp_path):
    path = write_report(canned_report(), tmp_path)["png"]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (1100, 660)
    assert len(data) > 20_000  # bars, lines, labels: not a blank canvas


def test_markdown_marks_missing_figures_and_one_round():
    report = canned_report()
    del report["figures"][F.STORAGE_COPY]
    report["settings"]["rounds"] = 1
    for figure in report["figures"].values():
        figure["rounds"] = 1
    md = render_markdown(report)
    assert "| `merge.fast.jobs1` | 400.0 MB/s | — | 0.88x | 1 round |" in md


def test_load_report_refuses_other_json(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else", "figures": {}}))
    with pytest.raises(MetadataError):
        load_report(other)
    other.write_text("{not json")
    with pytest.raises(MetadataError):
        load_report(other)


@pytest.fixture
def report_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(canned_report()))
    return path


def test_spec_on_a_canned_report(tmp_path, report_file, capsys):
    out = tmp_path / "spec.md"
    code = main(
        [
            "spec",
            "--volume",
            "40TB",
            "--days",
            "30",
            "--bench",
            str(report_file),
            "--link",
            "1Gb",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    lines = {line["key"]: line for line in result["lines"]}
    # safe on 2 jobs: 1e9 / 2.5 s = 400 MB/s beats 1 job (1e9 / 3.1 s); link 125 MB/s;
    # disk 800 / 2 -> link
    assert result["bottleneck"] == "link"
    assert lines["limit.merge"]["value"] == pytest.approx(400e6)
    assert lines["limit.merge"]["source"].startswith("figures['merge.safe.jobs2'].value")
    assert lines["servers"]["value"] == 1
    assert lines["memory_per_server"]["value"] == 75e6 * 2 + 2 * 2**30
    assert lines["input_rate"]["value"] == pytest.approx(40e12 / (30 * 86400))
    md = out.read_text()
    assert "**1 merge server(s)**" in md and "the bottleneck is **link**" in md
    rows = [
        row
        for row in md.splitlines()
        if row.startswith("| ") and not row.startswith(("| Quantity", "| ---"))
    ]
    assert len(rows) == len(result["lines"])
    assert all(
        row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows
    )  # every row says where it came from


def test_spec_table_output(report_file, capsys):
    assert (
        main(
            [
                "spec",
                "--volume",
                "1PB",
                "--days",
                "10",
                "--bench",
                str(report_file),
                "--mode",
                "deep",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    row = next(
        i for i, line in enumerate(text.splitlines()) if "per-server merge throughput" in line
    )
    assert "(bottleneck: merge)" in text.splitlines()[row + 1]  # the cell wraps within 100 columns
    assert "figures['merge.deep.jobs2']" in text  # 2 jobs (250 MB/s) beat 1 (222 MB/s)


def test_spec_errors_have_exit_codes(tmp_path, report_file, capsys):
    assert (
        main(
            ["spec", "--volume", "40TB", "--days", "30", "--bench", str(tmp_path / "missing.json")]
        )
        == 3
    )
    assert main(["spec", "--volume", "forty", "--days", "30", "--bench", str(report_file)]) == 2
    assert (
        main(
            [
                "spec",
                "--volume",
                "40TB",
                "--days",
                "30",
                "--bench",
                str(report_file),
                "--link",
                "fast",
            ]
        )
        == 2
    )
    assert "tmbmerge: error:" in capsys.readouterr().err


def test_spec_shows_the_range_of_the_rounds_in_100_columns(report_file, capsys):
    assert (
        main(["spec", "--volume", "40TB", "--days", "30", "--bench", str(report_file), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert_documented("spec", result)
    lines = {line["key"]: line for line in result["lines"]}
    assert result["rounds"] == 3
    # disk write rounds of the canned report: 666.7 / 800 / 1000 MB/s -> disk-bound rate / 2
    assert lines["limit.disk"]["slowest_rounds"] == pytest.approx(666.6666666e6 / 2)
    assert lines["limit.disk"]["fastest_rounds"] == pytest.approx(500e6)
    low, high = (
        lines["capacity_margin"]["slowest_rounds"],
        lines["capacity_margin"]["fastest_rounds"],
    )
    assert low < lines["capacity_margin"]["value"] <= high
    assert main(["spec", "--volume", "40TB", "--days", "30", "--bench", str(report_file)]) == 0
    table = capsys.readouterr().out
    assert max(len(row) for row in table.splitlines()) <= 100
    assert "slowest-fastest" in table and "333.3-500.0 MB/s" in table and "3 bench rounds" in table


def test_spec_on_one_round_says_there_is_no_range(tmp_path, capsys):
    report = canned_report()
    for figure in report["figures"].values():
        figure["rounds"] = 1
        figure["min"] = figure["max"] = figure["value"]
    path = tmp_path / "one-round.json"
    path.write_text(json.dumps(report))
    assert main(["spec", "--volume", "40TB", "--days", "30", "--bench", str(path)]) == 0
    table = capsys.readouterr().out
    assert "slowest-fastest" not in table and "no range: the bench measured one round" in table
