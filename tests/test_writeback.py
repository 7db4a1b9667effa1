"""Early writeback and drop-behind (``fsutil.Writeback``): what is handed to the disk, and
dropped from the page cache, while a file grows.

The writer asks the kernel to start writing everything older than a window as it goes, so the
final fsync has little left.  It must hand over each byte once, in order, never the newest
window, in few large requests; stop quietly where the call is refused; and never change what
the file holds.  With drop-behind it drops only bytes handed over a request earlier, never any
a reader of the process still needs (the merge's read-back), and all of the file once finished.
"""

import os

import numpy as np
import pytest

from engine import fsutil
from engine.fsutil import Writeback
from engine.verify import verify_file
from engine.writer import TmbWriter


@pytest.fixture
def recorded(monkeypatch):
    """Replace sync_file_range with a recorder of (fd, offset, length, flags) that succeeds."""
    calls = []

    def record(fd, offset, length, flags):
        calls.append((fd, offset, length, flags))
        return 0

    monkeypatch.setattr(fsutil, "_SYNC_FILE_RANGE", record)
    monkeypatch.setattr(Writeback, "window", 1000)
    monkeypatch.setattr(Writeback, "step", 500)
    return calls


@pytest.fixture
def dropped(monkeypatch, recorded):
    """Record posix_fadvise(DONTNEED) calls as (fd, offset, length) too."""
    calls = []

    def advise(fd, offset, length, advice):
        assert advice == os.POSIX_FADV_DONTNEED
        calls.append((fd, offset, length))

    monkeypatch.setattr(os, "posix_fadvise", advise)
    return calls


def test_hands_over_everything_but_the_window_once_in_order(recorded):
    wb = Writeback(7)
    for size in range(0, 10_000, 37):
        wb.written(size)
    covered = 0
    for fd, offset, length, flags in recorded:
        assert fd == 7 and flags == 2  # SYNC_FILE_RANGE_WRITE: start, never wait
        assert offset == covered  # contiguous, each byte once
        assert length >= Writeback.step  # few, large requests
        covered += length
    assert 10_000 - 37 - Writeback.window - Writeback.step < covered <= 9_990 - Writeback.window
    assert wb.started == covered


def test_small_files_hand_over_nothing(recorded):
    wb = Writeback(3)
    wb.written(Writeback.window + Writeback.step - 1)
    assert recorded == [] and wb.started == 0


def test_a_refused_call_turns_it_off_quietly(monkeypatch):
    """sync_file_range on a pipe fails (ESPIPE): no exception, no further calls."""
    read_end, write_end = os.pipe()
    try:
        monkeypatch.setattr(Writeback, "window", 0)
        monkeypatch.setattr(Writeback, "step", 1)
        wb = Writeback(write_end)
        if not wb.enabled:
            pytest.skip("no sync_file_range on this platform")
        wb.written(10)
        assert not wb.enabled and wb.started == 0
        wb.written(20)
        assert wb.started == 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_real_call_on_a_growing_file(tmp_path):
    """On a real file the kernel accepts the requests and the bytes are unchanged."""
    path = tmp_path / "grow.bin"
    data = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        wb = Writeback(fd)
        wb.window, wb.step = 1 << 20, 1 << 19
        for start in range(0, len(data), 1 << 18):
            os.write(fd, data[start : start + (1 << 18)])
            wb.written(start + (1 << 18))
        if fsutil._SYNC_FILE_RANGE is not None:
            assert wb.enabled and wb.started == len(data) - wb.window
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_writer_hands_over_its_file_as_it_grows(recorded, tmp_path):
    path = tmp_path / "w.tmb"
    n = 400
    lengths = np.full(n, 100, dtype=np.uint32)
    with TmbWriter(path, codec="none", block_bytes=4000) as writer:
        writer.write_batch(
            np.full(n, 5), np.arange(n), lengths, np.zeros(int(lengths.sum()), dtype=np.uint8)
        )
        fd = writer._fd
    assert recorded and all(call[0] == fd for call in recorded)
    assert (
        sum(call[2] for call in recorded)
        > os.path.getsize(path) - Writeback.window - Writeback.step - 4000
    )
    assert verify_file(path, metadata="none").ok


def test_writer_without_fsync_leaves_writeback_alone(recorded, tmp_path):
    n = 400
    lengths = np.full(n, 100, dtype=np.uint32)
    with TmbWriter(tmp_path / "w.tmb", codec="none", block_bytes=4000, fsync=False) as writer:
        writer.write_batch(
            np.full(n, 5), np.arange(n), lengths, np.zeros(int(lengths.sum()), dtype=np.uint8)
        )
    assert recorded == []


def test_drop_behind_trails_the_writeback_by_a_request(recorded, dropped):
    wb = Writeback(7, drop_behind=True)
    for size in range(0, 20_000, 37):
        wb.written(size)
        # only bytes handed over by an earlier request are ever dropped
        handed_before_last = sum(call[2] for call in recorded[:-1])
        assert wb.dropped <= handed_before_last
    covered = 0
    for fd, offset, length in dropped:
        assert fd == 7 and offset == covered and length >= Writeback.step
        covered += length
    assert covered == wb.dropped > 20_000 - 4 * (Writeback.window + Writeback.step)
    wb.finished(20_000)
    assert dropped[-1] == (7, 0, 20_000)  # the finished file goes whole


def test_drop_behind_waits_for_the_reader(recorded, dropped):
    wb = Writeback(7, drop_behind=True)
    reader = {"at": 0}
    wb.needed_from = lambda: reader["at"]
    for size in range(0, 10_000, 100):
        wb.written(size)
    assert dropped == []  # the reader has read nothing: nothing may go
    reader["at"] = 2_600
    for size in range(10_000, 12_000, 100):
        wb.written(size)
    assert dropped and all(offset + length <= 2_600 for _, offset, length in dropped)


def test_without_drop_behind_nothing_is_dropped(recorded, dropped):
    wb = Writeback(7)
    for size in range(0, 10_000, 100):
        wb.written(size)
    wb.finished(10_000)
    assert recorded and dropped == []


def test_a_refused_drop_turns_dropping_off(recorded, monkeypatch):
    def refuse(fd, offset, length, advice):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    wb = Writeback(7, drop_behind=True)
    for size in range(0, 10_000, 100):
        wb.written(size)
    assert not wb.drop_behind and wb.enabled and wb.started > 0


@pytest.mark.parametrize("mode", ["fast", "safe", "deep"])
def test_merge_drops_its_output_behind_the_read_back(
    mode, recorded, tmb_run, tmp_path, monkeypatch
):
    """A merge drops its output from the page cache as it goes, never ahead of the read-back
    (safe, deep), and all of it once finished."""
    from engine.merge import MergeSpec, merge_files

    drops, answers = [], []  # answers: what the read-back said it still needed, as the writer asked
    real_drop, real_keep = Writeback._drop, TmbWriter.keep_cached_from

    def keep_cached_from(self, needed_from):
        def asked():
            answers.append(needed_from())
            return answers[-1]

        real_keep(self, asked)

    def checked(self, start, end):  # called right after the writer asked (if it has a reader)
        drops.append((start, end, answers[-1] if self.needed_from is not None else None))
        real_drop(self, start, end)

    monkeypatch.setattr(TmbWriter, "keep_cached_from", keep_cached_from)
    monkeypatch.setattr(Writeback, "_drop", checked)
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: None)
    report = merge_files(tmb_run, tmp_path / "m.tmb", MergeSpec(mode=mode))
    *running, final = drops
    assert running, "nothing was dropped while the merge ran"
    if mode == "fast":
        assert all(needed is None for *_, needed in running)
    else:
        assert all(needed is not None and end <= needed for _, end, needed in running)
    assert final[:2] == (0, report.file_size)
