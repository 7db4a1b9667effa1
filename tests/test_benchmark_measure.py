"""The measuring pieces of ``tmbmerge bench``: that each measures what it says it does.

Peak memory must be the measured process's own (not its parent's), a cold read must really find
the file out of the page cache, the copy floor must really copy, the copyd0om comparison must
really produce the same events.  Results are checked, never timings.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine.benchmark import cpu, pagecache, storage
from engine.benchmark.dataset import make_run
from engine.benchmark.isolate import MeasurementFailed, run_isolated
from engine.benchmark.machine import describe_machine, mount_of
from engine.benchmark.reencode import reencode_files
from engine.host import peak_rss_bytes
from engine.readers import open_file


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("bench-run"), size=3 << 20, files=3)


def test_peak_rss_is_the_child_own_even_from_a_large_parent(tmp_path):
    ballast = np.ones(400 * 10**6, dtype=np.uint8)  # this process: > 400 MB resident
    assert peak_rss_bytes() > 400 * 10**6
    result = run_isolated(
        {"task": "storage", "size": 1 << 20, "out_dir": str(tmp_path)}, scratch=tmp_path
    )
    assert 5 * 10**6 < result["peak_rss_bytes"] < 250 * 10**6
    assert result["write"]["bytes"] == 1 << 20
    assert [p.name for p in tmp_path.iterdir()] == []  # its output and log files are gone
    del ballast


def test_multi_process_task_reports_its_tree(small_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    task = {
        "task": "merge",
        "mode": "fast",
        "jobs": 2,
        "threads": 2,
        "inputs": [str(p) for p in small_run.paths],
        "out_dir": str(out),
    }
    result = run_isolated(task, scratch=tmp_path, poll_tree=True)
    assert result["outputs"] >= 2 and result["events"] == small_run.events
    assert result["tree_peak_rss_bytes"] is not None and result["peak_rss_bytes"] > 0


def test_a_failing_task_says_why(tmp_path):
    with pytest.raises(MeasurementFailed, match="unknown benchmark task"):
        run_isolated({"task": "no-such-task"}, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cold_means_out_of_the_page_cache(tmp_path):
    path = tmp_path / "f.bin"
    storage.write_sequential(path, 4 << 20)
    storage.read_sequential(path)
    assert pagecache.resident_fraction(path) == 1.0
    if (mount_of(tmp_path) or {}).get("fstype") in ("tmpfs", "ramfs"):
        pytest.skip("a memory filesystem cannot evict: its reads are never cold")
    state = pagecache.make_cold(path)
    assert state["cold"] is True and state["resident_fraction"] <= pagecache.COLD_THRESHOLD
    assert storage.read_sequential(path)["bytes"] == 4 << 20
    assert pagecache.resident_fraction(path) == 1.0  # the read brought it back


def test_concatenate_copies_every_byte_in_order(small_run, tmp_path):
    out = tmp_path / "cat.bin"
    result = storage.concatenate(small_run.paths, out, chunk=1 << 16)
    expected = b"".join(p.read_bytes() for p in small_run.paths)
    assert result["bytes"] == len(expected) == small_run.bytes
    assert out.read_bytes() == expected


def test_streamed_concatenate_copies_every_byte_and_drops_the_copy(
    small_run, tmp_path, monkeypatch
):
    """The copy written the merges' way: same bytes, writeback started behind it, pages dropped."""
    from engine import fsutil

    calls = []
    monkeypatch.setattr(fsutil.Writeback, "window", 1 << 16)
    monkeypatch.setattr(fsutil.Writeback, "step", 1 << 16)
    real = os.posix_fadvise
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, offset, length, advice: (
            calls.append((offset, length)),
            real(fd, offset, length, advice),
        ),
    )
    out = tmp_path / "cat.bin"
    result = storage.concatenate(small_run.paths, out, chunk=1 << 16, streamed=True)
    expected = b"".join(p.read_bytes() for p in small_run.paths)
    assert result["bytes"] == len(expected) and out.read_bytes() == expected
    if fsutil._SYNC_FILE_RANGE is not None:
        assert len(calls) > 1 and calls[-1] == (0, len(expected))


def test_reencode_writes_the_same_events(small_run, tmp_path):
    result = reencode_files(small_run.paths, tmp_path / "re.tmb")
    assert result["events"] == small_run.events and result["bytes"] == small_run.bytes
    with open_file(tmp_path / "re.tmb") as merged:
        got = (
            merged.events.run.tolist(),
            merged.events.event.tolist(),
            merged.events.digest.tolist(),
        )
    runs, events, digests = [], [], []
    for path in small_run.paths:
        with open_file(path) as reader:
            runs += reader.events.run.tolist()
            events += reader.events.event.tolist()
            digests += reader.events.digest.tolist()
    assert got == (runs, events, digests)


def test_codec_figures_cover_their_sample(small_run):
    blocks = cpu.load_blocks(small_run.paths)
    stored = sum(len(b.data) for b in blocks)
    assert blocks and stored < small_run.bytes
    figures = cpu.per_core(blocks, min_seconds=0.01)
    assert set(figures) == {
        "xxh3",
        "adler32_zlib_ng",
        "adler32_zlib",
        "zstd_compress",
        "zstd_decompress",
    }
    records = sum(b.length for b in blocks)
    assert figures["xxh3"]["bytes"] == records * figures["xxh3"]["passes"]
    assert figures["zstd_decompress"]["bytes"] == stored * figures["zstd_decompress"]["passes"]
    result = cpu.decompress_blocks(blocks, threads=2)
    assert (result["bytes"], result["uncompressed_bytes"], result["blocks"]) == (
        stored,
        records,
        len(blocks),
    )
    assert len(cpu.load_blocks(small_run.paths, limit_bytes=1)) == 1


def test_machine_description_names_the_filesystem(tmp_path):
    machine = describe_machine(tmp_path)
    mount = mount_of(tmp_path)
    if mount is None:
        pytest.skip("no /proc/mounts here")
    assert os.path.realpath(tmp_path).startswith(mount["mountpoint"].rstrip("/") + "/")
    assert machine["filesystem"] == mount["fstype"]
    assert machine["cores"] >= 1 and machine["versions"]["numpy"] == np.__version__
