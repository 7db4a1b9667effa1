"""The names of benchmark figures, what each is compared with, and the targets the project set.

One table shared by ``tmbmerge bench`` (its report) and the pytest-benchmark suite in
``bench/`` (its ``extra_info``), so the two speak of the same ratios by the same names and
their figures can be set side by side.  A figure's *baseline* is the figure it is divided by in
the report's main table; a *target* is a ratio the project promised (issue 3), with the side
it must stay on.  All rates are input bytes per second unless the figure says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("fast", "safe", "deep")
PEAK_RSS_LIMIT = 300 * 10**6  # issue 3: every mode under 300 MB resident


def merge_key(mode: str, jobs: int) -> str:
    """The figure key of a merge in ``mode`` on ``jobs`` processes."""
    return f"merge.{mode}.jobs{jobs}"


STORAGE_WRITE = "storage.write"
STORAGE_READ = "storage.read"
STORAGE_READ_CACHED = "storage.read.cached"
STORAGE_COPY = "storage.copy"
STORAGE_COPY_STREAMED = "storage.copy.streamed"
REENCODE = "reencode"
XXH3 = "cpu.xxh3"
ADLER_NG = "cpu.adler32.zlib_ng"
ADLER_ZLIB = "cpu.adler32.zlib"
ZSTD_COMPRESS = "cpu.zstd.compress"
ZSTD_DECOMPRESS = "cpu.zstd.decompress"
ZSTD_ALL_CORES = "cpu.zstd.decompress.all_cores"

#: What each figure is, in the words of the report (``{jobs}`` and ``{cores}`` are filled in).
DESCRIPTIONS = {
    STORAGE_WRITE: "sequential write of incompressible data in 8 MiB calls, fsync included",
    STORAGE_READ: "sequential read right after evicting the file from the page cache",
    STORAGE_READ_CACHED: "sequential read of the same file from the page cache",
    STORAGE_COPY: "plain copy: the run's files concatenated into one with read/write, fsync "
    "included (the baseline)",
    STORAGE_COPY_STREAMED: "the same copy written the way merges write: writeback started 32 MiB "
    "behind, pages dropped from the page cache once on their way (sync_file_range, "
    "POSIX_FADV_DONTNEED)",
    REENCODE: "copyd0om way: every event decoded (iter_events) and re-encoded "
    "(TmbWriter.write_event), 1 thread",
    XXH3: "xxh3-64 of record bytes, 1 thread",
    ADLER_NG: "adler32 (zlib-ng) of record bytes, 1 thread",
    ADLER_ZLIB: "adler32 (stdlib zlib) of record bytes, 1 thread",
    ZSTD_COMPRESS: "zstd level 3 compression of 4 MiB record blocks, 1 thread (record bytes in)",
    ZSTD_DECOMPRESS: "zstd decompression of the run's blocks, 1 thread (stored bytes in)",
    ZSTD_ALL_CORES: "zstd decompression of every block of the run on {cores} threads (stored "
    "bytes in)",
}


def merge_description(mode: str, jobs: int) -> str:
    """What the figure of a merge in ``mode`` on ``jobs`` processes measures, in words."""
    if jobs == 1:
        return f"{mode} merge of the whole run into one output (merge_files, 1 job)"
    return (
        f"{mode} merge of the run into >= {jobs} outputs on {jobs} processes (merge_run, "
        f"jobs={jobs})"
    )


def baseline_of(key: str) -> str | None:
    """The figure ``key`` is divided by in the main table (None for the primary storage figures)."""
    if key.startswith("merge.") or key in (
        REENCODE,
        XXH3,
        ADLER_NG,
        ZSTD_COMPRESS,
        ZSTD_DECOMPRESS,
    ):
        return STORAGE_COPY
    return {
        STORAGE_COPY: STORAGE_WRITE,
        STORAGE_COPY_STREAMED: STORAGE_COPY,
        STORAGE_READ: STORAGE_READ_CACHED,
        ADLER_ZLIB: ADLER_NG,
        ZSTD_ALL_CORES: ZSTD_DECOMPRESS,
    }.get(key)


@dataclass(frozen=True)
class Target:
    """A target the report checks: a figure's ratio to a baseline must be at least ``minimum``."""

    name: str
    figure: str
    baseline: str
    minimum: float  # figure / baseline must be at least this
    says: str

    def met(self, ratio: float | None) -> bool | None:
        """Whether ``ratio`` meets the target (None when there is no ratio)."""
        return None if ratio is None else ratio >= self.minimum


TARGETS = (
    Target(
        "fast_vs_copy",
        merge_key("fast", 1),
        STORAGE_COPY,
        0.9,
        "fast merge at >= 0.9x the plain copy",
    ),
    Target(
        "safe_vs_copy",
        merge_key("safe", 1),
        STORAGE_COPY,
        0.7,
        "safe merge at >= 0.7x the plain copy",
    ),
    Target(
        "deep_vs_reencode",
        merge_key("deep", 1),
        REENCODE,
        3.0,
        "deep merge >= 3x faster than decode+re-encode (copyd0om)",
    ),
    Target(
        "deep_vs_zstd_all_cores",
        merge_key("deep", 1),
        ZSTD_ALL_CORES,
        0.5,
        "deep merge within 2x of zstd decompression of the same bytes on all cores",
    ),
)
