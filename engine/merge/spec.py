"""What a merge is asked to do: modes, sizes and the frozen spec handed to workers.

``MergeSpec`` is plain, immutable data, so it crosses process (and, later, Dask) boundaries
unchanged; everything a worker needs to merge one output is in it and in the list of input
paths.  The three modes are documented in README.md ("The three modes").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError

FAST, SAFE, DEEP = "fast", "safe", "deep"
MODES = (FAST, SAFE, DEEP)

DEFAULT_TARGET_SIZE = 2 << 30  # CMS-like merge target: 2 GiB
DEFAULT_MAX_EVENTS = 100_000_000


@dataclass(frozen=True)
class MergeSpec:
    """What to merge how: plain, frozen data handed to every worker (see the module docstring).

    Invalid values, or values that do not go together, are a ``ParameterError`` naming the
    fields (the command line adds its flags for them)."""

    mode: str = SAFE  # fast | safe | deep (README "The three modes")
    force: bool = False  # replace an existing output
    skip_bad: bool = False  # robust merge: leave bad inputs out, fail only if all are bad
    allow_mixed_runs: bool = False  # `merge` only: permit inputs of several runs in one output
    threads: int = 2  # threads for validation look-ahead and deep decoding
    metadata: str = "auto"  # where inputs' records come from: auto (their sidecars) | none
    catalog: str | None = None  # catalogue URL: the inputs' records, and where outputs are declared
    declare: bool = False  # declare the verified output to the catalogue
    declarer: str | None = None  # a plugin declarer (entry point tmbmerge.declarers)
    expect_complete: bool = False  # refuse a run whose catalogued unmerged files are not all inputs
    grandparents: bool = False  # declare the output with its inputs' parents as parents
    register: str | None = None  # rucio:RSE?scope=S&dataset=D: register the declared replica
    reproducible: bool = False  # timestamps from SOURCE_DATE_EPOCH or the inputs (reproducible.py)
    data_tier: str = "thumbnail"
    fsync: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ParameterError(
                f"unknown mode {self.mode!r} (choose fast, safe or deep)", parameters=("mode",)
            )
        if self.metadata not in ("auto", "none"):
            raise ParameterError(
                f"metadata must be auto or none, not {self.metadata!r}", parameters=("metadata",)
            )
        if self.threads < 1:
            raise ParameterError("threads must be at least 1", parameters=("threads",))
        if (self.declare or self.expect_complete or self.declarer) and not self.catalog:
            raise ParameterError(
                "declare, declarer and expect_complete need a catalog",
                parameters=("declare", "declarer", "expect_complete", "catalog"),
            )
        if self.grandparents and not self.declare:
            raise ParameterError(
                "grandparents is about declaring: it needs declare",
                parameters=("grandparents", "declare"),
            )
        if self.register and not self.declare:
            raise ParameterError(
                "register registers a declared replica: it needs declare",
                parameters=("register", "declare"),
            )
        if self.declare and self.mode == FAST:
            raise ParameterError(
                "declare needs a verified output: mode safe or deep",
                parameters=("declare", "mode"),
            )

    @property
    def verifies(self) -> bool:
        """Safe and deep modes: inputs crosschecked with their records, and the output read back
        and proven equal to them before it is published."""
        return self.mode in (SAFE, DEEP)

    @property
    def decodes_events(self) -> bool:
        """Deep mode: every event decoded (inputs read ahead, and the output read back)."""
        return self.mode == DEEP
