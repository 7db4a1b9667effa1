"""What a merge is asked to do: modes, sizes and the frozen spec handed to workers.

``MergeSpec`` is plain, immutable data, so it crosses process (and, later, Dask) boundaries
unchanged; everything a worker needs to merge one output is in it and in the list of input
paths.  The three modes are documented in README.md ("The three modes").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

FAST, SAFE, DEEP = "fast", "safe", "deep"
MODES = (FAST, SAFE, DEEP)

DEFAULT_TARGET_SIZE = 2 << 30  # CMS-like merge target: 2 GiB
DEFAULT_MAX_EVENTS = 100_000_000


@dataclass(frozen=True)
class MergeSpec:
    """How to merge: the mode, checks, threads and catalogue of a merge (frozen, plain data)."""

    mode: str = SAFE
    force: bool = False  # replace an existing output
    skip_bad: bool = False  # robust merge: leave bad inputs out, fail only if all are bad
    allow_mixed_runs: bool = False  # `merge` only: permit inputs of several runs in one output
    threads: int = 2  # threads for validation look-ahead and deep decoding
    metadata: str = "auto"  # where input bookkeeping comes from: auto (sidecar) | none
    catalog: str | None = None  # catalogue URL: crosschecks and declaration use it
    declare: bool = False  # declare the verified output to the catalogue
    declarer: str | None = None  # a plugin declarer (entry point tmbmerge.declarers)
    expect_complete: bool = False  # refuse a run whose catalogued unmerged files are not all inputs
    grandparents: bool = False  # declare the output with its inputs' parents as parents
    register: str | None = None  # rucio:RSE?scope=S&dataset=D: register the declared replica
    reproducible: bool = (
        False  # timestamps from SOURCE_DATE_EPOCH or the inputs (see reproducible.py)
    )
    data_tier: str = "thumbnail"
    fsync: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r} (choose fast, safe or deep)")
        if self.metadata not in ("auto", "none"):
            raise UsageError(f"metadata must be auto or none, not {self.metadata!r}")
        if self.threads < 1:
            raise UsageError("--jobs must be at least 1")
        if (self.declare or self.expect_complete or self.declarer) and not self.catalog:
            raise UsageError("--declare, --declarer and --expect-complete need --catalog URL")
        if self.grandparents and not self.declare:
            raise UsageError("--grandparents is about declaring: it needs --declare")
        if self.register and not self.declare:
            raise UsageError("--register registers a declared replica: it needs --declare")
        if self.declare and self.mode == FAST:
            raise UsageError("--declare needs a verified output: use --mode safe or deep")

    @property
    def checks_bookkeeping(self) -> bool:
        """Whether the mode reads the output back and checks it against its inputs (safe, deep)."""
        return self.mode in (SAFE, DEEP)

    @property
    def decodes_events(self) -> bool:
        """Whether the mode decodes every event (deep)."""
        return self.mode == DEEP
