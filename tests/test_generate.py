"""Tests of the synthetic run producer (engine.generate and ``tmbmerge generate``).

Files are small (a few hundred events), so the whole module runs in seconds.  Every property a
merge relies on is checked on the written files, read back through the real reader: names and
partition gaps, sidecar fields against the bytes (size, zlib's adler32), event numbers, the size
distribution, the compression ratio, the payload structure, and byte-identical determinism.
"""

from __future__ import annotations

import itertools
import json
import os
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from bindings.cli import main
from engine.errors import OutputExists, UsageError
from engine.generate import (
    EVENT_HEADER,
    EVENT_MAGIC,
    block_batches,
    event_sizes,
    generate_file,
    generate_run,
    partition_numbers,
)
from engine.metadata import normalize_metadata
from engine.readers.tmb import TmbReader

RUN = 178000


def read_events(path):
    with TmbReader(path) as reader:
        return [(ev.run, ev.event, bytes(ev.payload)) for ev in reader.iter_events()]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Five files of run 178000, partitions from 3 with a gap after every 2 files."""
    outdir = tmp_path_factory.mktemp("gen") / "nested" / "out"  # missing folders are created
    seen = []
    files = generate_run(
        outdir,
        run=RUN,
        files=5,
        events_per_file=120,
        seed=11,
        first_partition=3,
        gap_every=2,
        jobs=2,
        progress=seen.append,
    )
    return outdir, files, seen


def test_names_follow_run_and_partition_with_gaps(small_run):
    outdir, files, seen = small_run
    assert [f.partition for f in files] == [3, 4, 6, 7, 9]
    assert sorted(os.listdir(outdir)) == sorted(
        [f"tmb_0000178000_p{p:03d}.tmb" for p in (3, 4, 6, 7, 9)]
        + [f"tmb_0000178000_p{p:03d}.tmb.json" for p in (3, 4, 6, 7, 9)]
    )  # and no temporaries
    assert [f.partition for f in seen] == [3, 4, 6, 7, 9]  # reported in partition order
    assert partition_numbers(0, 7, 3) == [0, 1, 2, 4, 5, 6, 8]
    assert partition_numbers(5, 3) == [5, 6, 7]


def test_sidecar_matches_the_file(small_run):
    outdir, files, _ = small_run
    for f in files:
        data = f.path.read_bytes()
        md = json.loads(f.sidecar.read_text())
        assert f.sidecar == outdir / (f.path.name + ".json")
        assert md["file_name"] == f.path.name
        assert md["file_size"] == len(data) == f.size
        assert md["checksum"] == [f"adler32:{zlib.adler32(data):08x}"]
        events = read_events(f.path)
        assert md["event_count"] == len(events) == 120
        assert md["first_event"] == events[0][1] and md["last_event"] == events[-1][1]
        assert md["runs"] == [[RUN, 0, "physics"]]
        assert md["parents"] == [{"file_name": f"raw_0000178000_p{f.partition:03d}.raw"}]
        assert md["application"] == {"family": "reco", "name": "d0reco", "version": "p17.09.03"}
        assert (
            md["data_tier"],
            md["file_format"],
            md["file_type"],
            md["data_stream"],
            md["group"],
        ) == ("unmerged-thumbnail", "tmb", "importedDetector", "physics", "dzero")
        start, end = (
            datetime.fromisoformat(md["start_time"]),
            datetime.fromisoformat(md["end_time"]),
        )
        assert start.tzinfo is not None and start < end
        assert 120 * 1.2 <= (end - start).total_seconds() <= 120 + 120 * 2.8
        assert normalize_metadata(md, file_size=len(data)) == md  # canonical and catalogue-valid


def test_tmb_header_metadata(small_run):
    _, files, _ = small_run
    with TmbReader(files[2].path) as reader:
        md = reader.metadata
    assert md["application"]["name"] == "d0reco" and md["data_tier"] == "unmerged-thumbnail"
    assert (
        md["runs"] == [[RUN, 0, "physics"]]
        and md["partition"] == 6
        and md["data_stream"] == "physics"
    )
    assert md["generator"]["seed"] == 11 and md["generator"]["events"] == 120
    assert md["file_name"] == files[2].path.name


def test_event_numbers_rise_across_partitions(small_run):
    _, files, _ = small_run
    numbers = np.array([ev for f in files for _, ev, _ in read_events(f.path)], dtype=np.int64)
    runs = {run for f in files for run, _, _ in read_events(f.path)}
    steps = np.diff(numbers)
    assert runs == {RUN}
    assert numbers[0] >= 1 and np.all(steps >= 1)
    assert 0.05 < np.mean(steps > 1) < 0.5  # triggers skip a few numbers
    # a skipped partition leaves a hole of about one file's events (p4 -> p6)
    hole = files[2].first_event - files[1].last_event
    assert hole > 100


def test_split_run_gives_the_same_files(small_run, tmp_path):
    _, files, _ = small_run
    again = generate_run(
        tmp_path, run=RUN, files=2, events_per_file=120, seed=11, first_partition=6, jobs=1
    )
    assert [f.partition for f in again] == [6, 7]
    for original, other in zip(files[2:4], again, strict=True):
        assert other.path.read_bytes() == original.path.read_bytes()
        assert other.sidecar.read_bytes() == original.sidecar.read_bytes()


def test_event_sizes_distribution():
    sizes = event_sizes(5, RUN, 0, 5000, 15.0).astype(np.int64)
    assert sizes.min() >= 5000 and sizes.max() <= 200_000
    assert np.mean((sizes >= 5000) & (sizes <= 60_000)) >= 0.99
    assert np.any(sizes > 60_000)  # a thin tail of noisy events
    assert abs(sizes.mean() - 15_000) < 0.05 * 15_000
    assert 12_000 < np.median(sizes) < 15_000  # log-normal: median below mean
    assert len(np.unique(sizes)) > 3000  # odd sizes, not multiples of anything
    small = event_sizes(5, RUN, 0, 2000, 2.0)
    assert abs(small.mean() - 2000) < 100 and small.min() >= 666


def test_payloads_are_structured_and_compress_like_physics_data(tmp_path):
    f = generate_file(
        tmp_path / "one.tmb", run=RUN, partition=1, first_event=1000, n_events=600, seed=3
    )
    with TmbReader(f.path) as reader:
        blocks = reader.blocks
        ratio = blocks["uncompressed_length"].sum() / blocks["compressed_length"].sum()
        lengths = reader.events.length.astype(np.int64)
    assert 1.1 <= ratio <= 1.5, ratio  # measured 1.33 with zstd level 3
    assert np.array_equal(lengths, event_sizes(3, RUN, 1, 600, 15.0))
    for run, number, payload in read_events(f.path):
        header = np.frombuffer(payload[: EVENT_HEADER.itemsize], dtype=EVENT_HEADER)[0]
        assert header["magic"] == EVENT_MAGIC and header["run"] == run and header["event"] == number
        units = (
            4 + int(header["hits"]) + 3 * int(header["tracks"]) + 2 * int(header["clusters"]) + 1
        )
        assert (units - 1) * 8 < len(payload) <= units * 8
        assert int(header["hits"]) > int(header["clusters"]) > int(header["tracks"]) > 0
        hits = np.frombuffer(
            payload[32 : 32 + 8 * int(header["hits"])],
            dtype=[("channel", "<u2"), ("adc", "<u2"), ("time", "<f4")],
        )
        assert hits["adc"].max() < 4096 and np.all(np.abs(hits["time"]) < 200)
        assert np.all(hits["time"].view(np.uint32) & 0xFFF == 0)  # limited precision


def test_batches_end_where_the_writer_cuts_blocks(tmp_path):
    lengths = event_sizes(9, RUN, 2, 2000, 15.0)
    batches = block_batches(lengths, 256 << 10, batch_bytes=1 << 20)
    assert batches[0][0] == 0 and batches[-1][1] == 2000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(batches))
    f = generate_file(
        tmp_path / "blocks.tmb",
        run=RUN,
        partition=2,
        first_event=1,
        n_events=700,
        seed=9,
        block_bytes=1 << 20,
    )  # 8 blocks per batch: the file spans two batches
    with TmbReader(f.path) as reader:
        blocks = reader.blocks
        lengths = reader.events.length.astype(np.int64)
    assert len(blocks) >= 10
    records = lengths + 16
    firsts = blocks["first_event"].astype(np.int64)
    for size, nxt in zip(blocks["uncompressed_length"][:-1], firsts[1:], strict=True):
        assert size + records[nxt] > 1 << 20  # every block but the last is full


def test_same_seed_gives_identical_bytes(tmp_path):
    one = generate_run(tmp_path / "a", run=RUN, files=3, events_per_file=40, seed=21, jobs=1)
    two = generate_run(tmp_path / "b", run=RUN, files=3, events_per_file=40, seed=21, jobs=3)
    other = generate_run(tmp_path / "c", run=RUN, files=1, events_per_file=40, seed=22, jobs=1)
    for a, b in zip(one, two, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()
        assert a.sidecar.read_bytes() == b.sidecar.read_bytes()
        assert read_events(a.path) == read_events(b.path)
    assert read_events(one[0].path) != read_events(other[0].path)
    with TmbReader(one[0].path) as r1, TmbReader(other[0].path) as r2:
        assert r1.uuid != r2.uuid


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(UsageError, match="number of files must be at least 1"):
        generate_run(tmp_path, run=RUN, files=0, events_per_file=10)
    with pytest.raises(UsageError, match="events per file must be at least 1"):
        generate_run(tmp_path, run=RUN, files=1, events_per_file=0)
    with pytest.raises(UsageError, match="partition 1000 out of range"):
        generate_run(tmp_path, run=RUN, files=2, events_per_file=10, first_partition=999)
    with pytest.raises(UsageError, match="mean event size"):
        generate_run(tmp_path, run=RUN, files=1, events_per_file=10, mean_event_kb=0)
    with pytest.raises(UsageError, match="unknown codec"):
        generate_run(tmp_path, run=RUN, files=1, events_per_file=10, codec="lz4")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        generate_run(tmp_path / "plain", run=RUN, files=1, events_per_file=10)
    assert os.listdir(tmp_path) == ["plain"]  # nothing was written


def test_existing_outputs_need_overwrite(tmp_path):
    first = generate_run(tmp_path, run=RUN, files=2, events_per_file=10, seed=1, jobs=1)
    with pytest.raises(OutputExists, match="output exists"):
        generate_run(tmp_path, run=RUN, files=3, events_per_file=10, seed=2, jobs=1)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f.path.name for f in first] + [f.sidecar.name for f in first]
    )
    (tmp_path / "lone.tmb.json").write_text("{}")
    with pytest.raises(OutputExists, match="sidecar exists"):
        generate_file(tmp_path / "lone.tmb", run=RUN, partition=5, first_event=1, n_events=5)
    assert not (tmp_path / "lone.tmb").exists()
    replaced = generate_run(
        tmp_path, run=RUN, files=2, events_per_file=10, seed=2, jobs=1, overwrite=True
    )
    assert replaced[0].adler32 != first[0].adler32
    assert zlib.adler32(replaced[0].path.read_bytes()) == replaced[0].adler32


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "generate",
        str(out),
        "--run",
        "178001",
        "--files",
        "3",
        "--events-per-file",
        "25",
        "--seed",
        "4",
        "--gap-every",
        "1",
        "--mean-event-kb",
        "8",
        "--jobs",
        "2",
    ]
    assert main(args + ["--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["partition"] for entry in listed] == [0, 2, 4]
    assert [os.path.basename(entry["path"]) for entry in listed] == [
        "tmb_0000178001_p000.tmb",
        "tmb_0000178001_p002.tmb",
        "tmb_0000178001_p004.tmb",
    ]
    for entry in listed:
        data = open(entry["path"], "rb").read()
        assert (
            entry["size"] == len(data) and entry["checksum"] == f"adler32:{zlib.adler32(data):08x}"
        )
        assert entry["events"] == 25

    assert main(args) == 7  # exists: the output error's exit code
    assert "output exists" in capsys.readouterr().err

    assert main(args + ["--force"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("wrote 3 files, 75 events")
    assert all("tmb_0000178001_p00" in line and "adler32:" in line for line in lines[:3])

    assert main(args + ["--force", "--quiet"]) == 0
    assert capsys.readouterr().out == ""

    assert main(["generate", str(out), "--run", "1", "--files", "0", "--events-per-file", "5"]) == 2
    assert "number of files must be at least 1" in capsys.readouterr().err


def _job_finishing_in_reverse(job):
    """Stands in for writing a file: later partitions finish first."""
    import time

    from engine.generate import GeneratedFile

    time.sleep(0.05 * (10 - job.partition))
    return GeneratedFile(
        Path(job.path), job.partition, job.n_events, 0, 0, job.first_event, job.first_event, None
    )


def test_progress_comes_in_partition_order_when_files_finish_out_of_order(tmp_path, monkeypatch):
    import engine.generate

    monkeypatch.setattr(engine.generate, "_run_job", _job_finishing_in_reverse)
    seen = []
    files = generate_run(
        tmp_path, run=RUN, files=4, events_per_file=10, jobs=4, progress=seen.append
    )
    assert [f.partition for f in seen] == [0, 1, 2, 3] == [f.partition for f in files]
