"""What a merge tells its caller: per-input outcomes, per-output reports, per-run totals.

Plain dataclasses with ``to_dict()`` for ``--json``; they cross process boundaries by pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checksums import format_adler32


@dataclass
class InputOutcome:
    """What became of one input of a merge: accepted (events, size, adler32) or why not."""

    path: Path
    accepted: bool
    events: int = 0
    file_size: int = 0
    adler32: int | None = None
    reason: dict[str, Any] | None = None  # EngineError.to_dict() when rejected

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data."""
        out: dict[str, Any] = {
            "file": str(self.path),
            "accepted": self.accepted,
            "events": self.events,
            "file_size": self.file_size,
        }
        if self.adler32 is not None:
            out["checksum"] = format_adler32(self.adler32)
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass
class MergeReport:
    """What ``merge_files`` made: the output, its size, adler32, counts, each input's outcome."""

    output: Path
    mode: str
    inputs: list[InputOutcome] = field(default_factory=list)
    file_size: int = 0
    adler32: int = 0
    event_count: int = 0
    block_count: int = 0
    bytes_in: int = 0
    seconds: float = 0.0
    verified: bool = False
    peak_rss_bytes: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    declared: str | None = None  # "declared", "already declared" or "failed" when --declare
    declare_error: Any = None  # the EngineError of a failed declaration
    retired: list[dict[str, Any]] = field(
        default_factory=list
    )  # inputs moved or deleted after declaring
    status: str = "merged"  # merged | already verified (resumed runs)
    catalog: dict[str, Any] | None = None  # the catalogue budget spent (requests, seconds_waiting)
    registered: str | None = None  # "registered", "already registered" or "failed" with --register

    @property
    def checksum(self) -> str:
        """The output's adler32 as the catalogue writes it."""
        return format_adler32(self.adler32)

    @property
    def accepted(self) -> list[InputOutcome]:
        """The inputs merged."""
        return [i for i in self.inputs if i.accepted]

    @property
    def skipped(self) -> list[InputOutcome]:
        """The inputs left out (``skip_bad``)."""
        return [i for i in self.inputs if not i.accepted]

    @property
    def throughput(self) -> float:
        """Input bytes merged per second."""
        return self.bytes_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``tmbmerge merge --json``)."""
        return {
            "output": str(self.output),
            "mode": self.mode,
            "status": self.status,
            "file_size": self.file_size,
            "checksum": self.checksum,
            "event_count": self.event_count,
            "block_count": self.block_count,
            "bytes_in": self.bytes_in,
            "seconds": round(self.seconds, 3),
            "throughput_MBps": round(self.throughput / 1e6, 1),
            "verified": self.verified,
            "peak_rss_MB": round(self.peak_rss_bytes / 2**20, 1),
            "declared": self.declared,
            "declare_error": None if self.declare_error is None else self.declare_error.to_dict(),
            "retired": self.retired,
            "catalog": self.catalog,
            "registered": self.registered,
            "inputs": [i.to_dict() for i in self.inputs],
            "skipped": [i.to_dict() for i in self.skipped],
        }


@dataclass
class RunReport:
    """What ``merge_run`` did: each output's report, the failures and the inputs left out."""

    out_dir: Path
    outputs: list[MergeReport] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(
        default_factory=list
    )  # inputs --skip-bad left out at planning
    seconds: float = 0.0
    planned: list[str] = field(
        default_factory=list
    )  # names of the outputs this merge-run set out to merge
    catalog: dict[str, Any] | None = None  # the catalogue budget spent by the whole merge-run

    @property
    def ok(self) -> bool:
        """Whether no output failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``tmbmerge merge-run --json``)."""
        merged = [o for o in self.outputs if o.status == "merged"]
        return {
            "out_dir": str(self.out_dir),
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "outputs": [o.to_dict() for o in self.outputs],
            "failures": self.failures,
            "skipped": self.skipped,
            "catalog": self.catalog,
            "totals": {
                "outputs": len(self.outputs),
                "events": sum(o.event_count for o in self.outputs),
                "bytes_in": sum(o.bytes_in for o in merged),
                "bytes_out": sum(o.file_size for o in self.outputs),
            },
        }
