"""The data every benchmark runs on: one synthetic run (``engine.generate``) of a requested size.

A run of ``files`` unmerged files of about ``size / files`` bytes each is written with all cores
(``generate_run``), sidecars included, so safe and deep merges crosscheck records exactly
as in production.  Files are sized from the generator's measured density (about 11.3 kB stored
per 15 kB event with zstd level 3), slightly overshooting, so a run asked for 2 GiB holds at
least that much.  ``RunData`` lists what was written; the caller removes the folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

STORED_BYTES_PER_EVENT = (
    11_000  # a little under the measured ~11.3 kB: runs come out >= the size asked
)
BENCH_RUN_NUMBER = 178000
BENCH_SEED = 2005


@dataclass(frozen=True)
class RunData:
    """A generated run the bench measures on: its folder, files, bytes, events and run number."""

    directory: Path
    paths: tuple[Path, ...]
    bytes: int
    events: int
    run: int

    @property
    def files(self) -> int:
        """Number of files."""
        return len(self.paths)

    def describe(self) -> dict:
        """The run as the report shows it (no file list)."""
        return {
            "directory": str(self.directory),
            "files": self.files,
            "bytes": self.bytes,
            "events": self.events,
            "run": self.run,
            "mean_file_bytes": self.bytes // max(1, self.files),
            "generator": "engine.generate.generate_run (15 kB mean events, zstd level 3, 4 MiB "
            "blocks)",
        }

    def to_dict(self) -> dict:
        """The run with its file list, for the workers."""
        return {**self.describe(), "paths": [str(p) for p in self.paths]}


def events_per_file(size: int, files: int) -> int:
    """Events per file for a run of ``size`` stored bytes in ``files`` files."""
    return max(1, math.ceil(size / files / STORED_BYTES_PER_EVENT))


def make_run(
    directory,
    *,
    size: int,
    files: int,
    seed: int = BENCH_SEED,
    jobs: int | None = None,
    progress=None,
) -> RunData:
    """Generate a run of about ``size`` bytes in ``files`` files into ``directory``."""
    from ..generate import generate_run

    written = generate_run(
        directory,
        run=BENCH_RUN_NUMBER,
        files=files,
        events_per_file=events_per_file(size, files),
        seed=seed,
        jobs=jobs,
        fsync=False,
        progress=progress,
    )
    return RunData(
        Path(directory),
        tuple(f.path for f in written),
        sum(f.size for f in written),
        sum(f.events for f in written),
        BENCH_RUN_NUMBER,
    )
