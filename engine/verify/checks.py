"""``verify_file``: prove one TMB file sound, fast (digests only) or deep (every event decoded).

Fast: the reader's open-time checks (header, metadata, trailer, index and block tiling), then
every block's header and stored-bytes digest, reading each byte once and computing the whole
file's adler32 on the way.  Deep: also decompress every block (on all cores) and check its
uncompressed digest, its record framing and every event's payload digest against the index.
With ``metadata="auto"`` the file is also held against its sidecar ``<file>.json`` (size,
adler32, event count, name, run numbers, first and last event) and its own embedded name.
Failures are returned in the report (``verify_files`` checks many files in parallel and never
stops at the first bad one).
``checked_sidecar`` is what a declaration from a sidecar reads: the sidecar, checked against the
file's name, size and index (all but the adler32, which needs the whole file read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checksums import RunningAdler32, format_adler32
from ..errors import (
    EngineError,
    InputNotFound,
    MetadataError,
    MetadataMismatch,
    NotATmbFile,
    ParameterError,
    input_error,
)
from ..host import usable_cores
from ..metadata import FileFacts, normalize_metadata, read_sidecar, sidecar_path, stated_facts
from ..pool import bounded_map
from ..readers import detect, open_file
from ..remote import location
from .crosscheck import crosscheck_embedded_name, crosscheck_facts, measured_facts


@dataclass
class FileReport:
    """What ``verify_file`` found about one file: its facts, or the error that failed it."""

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
        """Whether the file passed."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``tmbmerge verify --json``)."""
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
    return None if md is None else stated_facts(md, source="sidecar")


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
        raise ParameterError(
            f"metadata must be auto or none, not {metadata!r}", parameters=("metadata",)
        )
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
                crosscheck_embedded_name(path, reader)
                if expected is None:
                    expected = sidecar_facts(path)
                if expected is not None:
                    actual = measured_facts(reader, adler.value, path.name, expected)
                    crosscheck_facts(path, actual, expected)
                    report.metadata_checked = expected.source
    except EngineError as exc:
        report.error = exc.with_path(path)
    report.seconds = time.perf_counter() - start
    return report


def verify_files(
    paths, *, deep: bool = False, metadata: str = "auto", threads: int | None = None
) -> list[FileReport]:
    """Verify many files in parallel on ``threads`` threads (default: every usable core);
    reports come back in the order of ``paths``."""
    paths = [location(p) for p in paths]
    threads = threads or usable_cores()
    file_threads = min(threads, max(len(paths), 1))
    block_threads = max(1, threads // file_threads) if deep else 1
    return list(
        bounded_map(
            lambda p: verify_file(p, deep=deep, metadata=metadata, threads=block_threads),
            paths,
            threads=file_threads,
        )
    )


def checked_sidecar(data_path: Path, *, require_data: bool = True) -> dict:
    """The normalized sidecar of ``data_path``, checked against the file's name, size and index
    (what is declared from it must be the file); ``require_data=False``: a sidecar whose data
    file is absent is returned as it is."""
    raw = read_sidecar(data_path)
    if raw is None:
        raise InputNotFound("no sidecar (metadata) for this file", path=sidecar_path(data_path))
    try:
        md = normalize_metadata(raw)
    except MetadataError as exc:
        raise exc.with_path(sidecar_path(data_path)) from None
    if md["file_name"] != data_path.name:
        raise MetadataMismatch(
            "the sidecar describes another file",
            path=sidecar_path(data_path),
            expected=data_path.name,
            actual=md["file_name"],
        )
    try:
        size = data_path.stat().st_size
    except FileNotFoundError:
        if require_data:
            raise InputNotFound("no such file", path=data_path) from None
        return md
    except OSError as exc:
        raise input_error(exc, data_path, "stat") from None
    if "file_size" not in md:
        raise MetadataError("file_size: missing", path=sidecar_path(data_path))
    if md["file_size"] != size:
        raise MetadataMismatch(
            "file size differs from its sidecar's file_size",
            path=data_path,
            expected=md["file_size"],
            actual=size,
        )
    _check_against_index(data_path, md)
    return md


def _check_against_index(data_path: Path, md: dict) -> None:
    """What the file's own index knows (event count, runs, first and last event) must be what the
    sidecar says: a sidecar claiming run 999 must not declare the file under run 999.  Opening
    reads the header and index only (the adler32 would need the whole file: ``verify`` does it).
    A data file of another format (no reader knows its magic bytes) is declared on its name and
    size alone, as before."""
    try:
        reader_class = detect(data_path)
    except NotATmbFile:
        return
    stated = stated_facts(md, source="sidecar")
    with reader_class(data_path) as reader:
        crosscheck_facts(data_path, measured_facts(reader, None, data_path.name, stated), stated)
