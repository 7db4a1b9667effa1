"""The live progress display: one line that fits 80 columns, fed bytes that add up to 100%."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console

from bindings.progress import RichProgress
from engine.merge import MergeSpec, merge_files, merge_run
from engine.progress import NullProgress


class Recording(NullProgress):
    def __init__(self):
        self.started = []
        self.bytes = self.files = 0
        self._lock = threading.Lock()

    def start(self, *, label, files=0, events=0, bytes=0):
        self.started.append((files, bytes))

    def advance(self, *, files=0, events=0, bytes=0):
        with self._lock:
            self.files += files
            self.bytes += bytes


def test_the_line_fits_80_columns_and_shows_100_percent_at_the_end():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    progress = RichProgress(console=console)
    progress.start(
        label="merge-run tmb_0000178000_a_long_folder_name",
        files=40,
        events=1_234_567,
        bytes=2_234_567_890,
    )
    progress.advance(files=40, events=1_234_567, bytes=2_234_567_890)
    progress.finish()
    drawn = re.sub(r"\x1b\[[?0-9;]*[A-Za-z]", "", console.file.getvalue())
    lines = [line for line in drawn.replace("\r", "\n").splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), lines
    text = lines[-1]
    assert "100%" in text and "2.2/2.2 GB" in text and "40/40 files" in text


@pytest.mark.parametrize("skip_bad", [False, True])
def test_merge_advances_every_byte_of_its_inputs(tmb_run, tmp_path, skip_bad):
    if skip_bad:
        data = bytearray(tmb_run[2].read_bytes())
        data[len(data) // 2] ^= 0xFF
        tmb_run[2].write_bytes(bytes(data))
    progress = Recording()
    merge_files(
        tmb_run, tmp_path / "out.tmb", MergeSpec(mode="fast", skip_bad=skip_bad), progress=progress
    )
    assert progress.started == [(6, sum(p.stat().st_size for p in tmb_run))]
    assert (progress.files, progress.bytes) == progress.started[0]


@pytest.mark.parametrize("jobs", [1, 2])
def test_merge_run_advances_every_byte_of_its_inputs(tmb_run, tmp_path, jobs):
    progress = Recording()
    total = sum(p.stat().st_size for p in tmb_run)
    merge_run(
        [tmb_run[0].parent],
        tmp_path / "out",
        target_size=total // 2,
        spec=MergeSpec(mode="fast"),
        jobs=jobs,
        progress=progress,
    )
    assert progress.started == [(6, total)]
    assert (progress.files, progress.bytes) == (6, total)
