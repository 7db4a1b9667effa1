"""``verify_file``: prove one TMB file sound, fast (digests only) or deep (every event decoded).

Fast: the reader's open-time checks (header, metadata, trailer, index and block tiling), then
every block's header and stored-bytes digest, reading each byte once and computing the whole
file's adler32 on the way.  Deep: also decompress every block (on all cores) and check its
uncompressed digest, its record framing and every event's payload digest against the index.
With ``metadata="auto"`` the file is also held against its sidecar ``<file>.json`` (size,
adler32, event count, name, run numbers, first and last event) and its own embedded name.  Failures
are returned in the report (``verify_files`` checks many files in parallel and never stops at the
first bad one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checksums import RunningAdler32, format_adler32
from ..errors import EngineError, MetadataMismatch, UsageError
from ..host import usable_cores
from ..pool import bounded_map
from ..readers import open_file
from ..remote import location
from .crosscheck import FileFacts, crosscheck_facts, measured_facts, stated_facts


@dataclass
class FileReport:
    path: Path
    error: EngineError | None = None
    file_size: int | None = None
    adler32: int | None = None
    event_count: int | None = None
    block_count: int | None = None
    deep: bool = False
    metadata_checked: str | None = None  # "sidecar", "catalogue" or None
    seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": str(self.path),
            "ok": self.ok,
            "deep": self.deep,
            "metadata_checked": self.metadata_checked,
            "seconds": round(self.seconds, 4),
        }
        if self.file_size is not None:
            out["file_size"] = self.file_size
        if self.adler32 is not None:
            out["checksum"] = format_adler32(self.adler32)
        if self.event_count is not None:
            out["event_count"] = self.event_count
            out["block_count"] = self.block_count
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


def sidecar_facts(path: Path) -> FileFacts | None:
    """What the file's sidecar states, or None when it has none (validated as a merge validates
    it: an unknown field is refused by both)."""
    from ..metadata import load_sidecar

    md = load_sidecar(path)
    return None if md is None else stated_facts(md)


def verify_file(
    path,
    *,
    deep: bool = False,
    metadata: str = "auto",
    expected: FileFacts | None = None,
    threads: int = 1,
) -> FileReport:
    """Check one file; the report holds the first problem found, or none."""
    if metadata not in ("auto", "none"):
        raise UsageError(f"--metadata must be auto or none, not {metadata!r}")
    path = location(path)
    report = FileReport(path, deep=deep)
    start = time.perf_counter()
    try:
        with open_file(path) as reader:
            report.file_size, report.event_count, report.block_count = (
                reader.file_size,
                reader.event_count,
                reader.block_count,
            )
            adler = RunningAdler32()
            if deep:
                for _ in bounded_map(reader.decode, reader.iter_blocks(adler), threads=threads):
                    pass
            else:
                for _ in reader.check_blocks(adler, threads=max(threads, 2)):
                    pass
            report.adler32 = adler.value
            if metadata == "auto":
                embedded = reader.metadata.get("file_name")
                if embedded is not None and embedded != path.name:
                    raise MetadataMismatch(
                        "the file's own metadata names another file",
                        path=path,
                        region="metadata",
                        expected=path.name,
                        actual=embedded,
                    )
                source = "catalogue" if expected is not None else "sidecar"
                if expected is None:
                    expected = sidecar_facts(path)
                if expected is not None:
                    actual = measured_facts(reader, adler.value, path.name, expected)
                    crosscheck_facts(path, actual, expected, source=source)
                    report.metadata_checked = source
    except EngineError as exc:
        report.error = exc.with_path(path)
    report.seconds = time.perf_counter() - start
    return report


def verify_files(
    paths, *, deep: bool = False, metadata: str = "auto", jobs: int | None = None
) -> list[FileReport]:
    """Verify many files in parallel; reports come back in the order of ``paths``."""
    paths = [location(p) for p in paths]
    jobs = jobs or usable_cores()
    file_threads = min(jobs, max(len(paths), 1))
    block_threads = max(1, jobs // file_threads) if deep else 1
    return list(
        bounded_map(
            lambda p: verify_file(p, deep=deep, metadata=metadata, threads=block_threads),
            paths,
            threads=file_threads,
        )
    )
