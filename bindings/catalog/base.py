"""The catalogue interface every backend implements, and the declaration rules they share.

A catalogue speaks SAM: records are dicts with SAM's field names, checksums are always
``adler32:<8 lowercase hex>`` on the way out (``enstore:<decimal>`` is accepted on the way in
and converted), lineage is by file name.  Backends differ only in where the records live.

The declaration rules live here (and in ``engine.catalog``, which this re-exports:
``DeclareResult``, ``parent_names``, the ``UnknownParent`` and ``AlreadyMerged`` refusals) so
that every backend applies the same ones:

- ``prepare_declaration`` validates the metadata (``normalize_metadata``) and requires
  ``file_size``, except for a *placeholder* (a parent known by name only, see
  ``placeholder_metadata``);
- ``check_redeclaration`` is the idempotency rule: declaring a name again with the same size
  and the same adler32 is success ("already declared"); anything else is a loud
  ``DeclarationConflict``;
- parents must be declared before their children, else ``UnknownParent`` naming them;
- with ``exclusive_tier`` a declaration is refused (``AlreadyMerged``) when one of its parents
  already has another child of that data tier: the "not merged twice" rule, applied by each
  backend at the moment of declaring (in the same transaction where it has transactions).

Batches, cache and budget: a campaign asks about thousands of files, so the interface has
batch look-ups (``records``, ``children_of``) that backends answer with a few requests
(``BATCH_SIZE`` names each), a record cache for the life of the catalogue object (one
command), and a ``CatalogBudget`` counting requests and seconds spent waiting, with a total
deadline on top of each backend's per-request timeouts.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engine.catalog import (
    ALREADY_DECLARED,
    DECLARED,
    DeclareResult,
    already_merged_error,
    parent_names,
    unknown_parent_error,
)
from engine.checksums import adler32_from_checksums, format_adler32
from engine.errors import (
    CatalogError,
    CatalogUnavailable,
    DeclarationConflict,
    FileNotDeclared,
    MetadataError,
    UsageError,
)
from engine.metadata import normalize_metadata

#: Free-form parameter marking a record made for a parent known only by name.
PLACEHOLDER_PARAMETER = "Catalog.placeholder"

#: Names per batched request (SAM's own client asks 50 records at a time; DUNE's tools 100).
BATCH_SIZE = 100

ENV_DEADLINE = "TMBMERGE_CATALOG_DEADLINE"
#: Seconds of catalogue work one command may spend in all (requests and waits between retries).
DEFAULT_DEADLINE = 900.0


def deadline_from_environment(environ=os.environ) -> float:
    text = environ.get(ENV_DEADLINE)
    if not text:
        return DEFAULT_DEADLINE
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise UsageError(f"{ENV_DEADLINE}={text!r} is not a positive number of seconds")
    return value


@dataclass
class CatalogBudget:
    """Requests made and seconds spent waiting on a catalogue, under a total deadline.

    ``deadline`` is the catalogue work (seconds) one command may spend in all; its clock starts
    with the first request.  ``remaining()`` is what is left; ``check()`` raises
    ``CatalogUnavailable`` once it is spent.  Backends call ``spend`` once per request made.
    """

    deadline: float = DEFAULT_DEADLINE
    requests: int = 0
    seconds: float = 0.0
    _started: float | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def remaining(self) -> float:
        if self._started is None:
            return self.deadline
        return self.deadline - (time.monotonic() - self._started)

    def check(self, url: str) -> float:
        """Seconds left (starting the clock); ``CatalogUnavailable`` when none are."""
        self.start()
        left = self.remaining()
        if left <= 0:
            raise CatalogUnavailable(
                f"{url}: catalogue deadline of {self.deadline:g} s spent "
                f"({self.requests} requests); the catalogue is too slow or down"
            )
        return left

    def spend(self, seconds: float, requests: int = 1) -> None:
        self.requests += requests
        self.seconds += seconds

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "seconds_waiting": round(self.seconds, 3),
            "deadline": self.deadline,
        }


class Catalog(ABC):
    """A file catalogue: SAM records by file name, and the lineage between them.

    The base class of tmbmerge's backends: it implements the engine's ``engine.catalog.Catalog``
    protocol (batches, cache, budget, the declaration rules) around a few abstract methods.

    ``queryable`` is False for declare-only backends (``exec:``), whose query methods raise
    ``CatalogError``; callers that can do without queries (the declaration hook) check it.
    """

    queryable = True

    def __init__(self, url: str, *, deadline: float | None = None) -> None:
        self.url = url
        self.budget = CatalogBudget(
            deadline if deadline is not None else deadline_from_environment()
        )
        self._cache: dict[str, dict] = {}

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options) -> Catalog:
        """Open the catalogue that ``url`` names (options are backend-specific keywords)."""

    @classmethod
    def require_existing(cls, url: str) -> None:
        """Raise ``CatalogError`` if the catalogue ``url`` names does not exist yet (backends that
        would create one on opening say so here; others exist or fail on their own)."""
        return None  # the default: nothing to check before opening

    @abstractmethod
    def get(self, file_name: str) -> dict:
        """The record of ``file_name``; ``FileNotDeclared`` if there is none."""

    def exists(self, file_name: str) -> bool:
        """Whether ``file_name`` is declared."""
        try:
            self.get(file_name)
        except FileNotDeclared:
            return False
        return True

    @abstractmethod
    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        """Declare a file (see the module docstring for the rules)."""

    # --- batches and the cache ----------------------------------------------------------

    def records(self, names) -> dict[str, dict]:
        """{name: record} of the declared ones among ``names`` (undeclared names are absent).

        Answers from the cache where it can, and asks the backend (``fetch_records``) for the
        rest in batches of ``BATCH_SIZE``.
        """
        names = list(dict.fromkeys(names))
        missing = [name for name in names if name not in self._cache]
        for start in range(0, len(missing), BATCH_SIZE):
            self._cache.update(self.fetch_records(missing[start : start + BATCH_SIZE]))
        return {name: self._cache[name] for name in names if name in self._cache}

    def fetch_records(self, names: list[str]) -> dict[str, dict]:
        """One batch of records from the catalogue itself (no cache); backends answer it in one
        request where they can.  The default asks one by one."""
        found = {}
        for name in names:
            try:
                found[name] = self.get(name)
            except FileNotDeclared:
                pass
        return found

    def children_of(self, names, *, data_tier: str | None = None) -> dict[str, list[str]]:
        """{name: sorted names of its children (of ``data_tier`` only, if given)} for ``names``.

        Names that are not declared map to no children.  Backends answer it in one request
        per batch where they can; the default asks one by one.
        """
        out: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            try:
                children = self.children(name)
            except FileNotDeclared:
                children = []
            if data_tier is not None:
                tiers = self.records(children)
                children = [c for c in children if tiers.get(c, {}).get("data_tier") == data_tier]
            out[name] = sorted(children)
        return out

    def forget(self, name: str) -> None:
        """Drop ``name`` from the cache (its record changed, or was just made)."""
        self._cache.pop(name, None)

    def exclusive_conflicts(self, metadata: dict, tier: str) -> list[str]:
        """Other files of data tier ``tier`` that are children of the parents of ``metadata``."""
        name = metadata["file_name"]
        by_parent = self.children_of(parent_names(metadata), data_tier=tier)
        return sorted(
            {child for children in by_parent.values() for child in children if child != name}
        )

    def conflicts_after(self, metadata: dict, tier: str) -> list[str]:
        """``exclusive_conflicts`` once ``metadata`` is declared (a backend may ask it more cheaply
        then)."""
        return self.exclusive_conflicts(metadata, tier)

    def declare_without_transactions(
        self, md: dict, exclusive_tier: str | None, post
    ) -> DeclareResult:
        """The declaration rules for a catalogue with no transactions (SAM web, MetaCat).

        ``md`` is prepared; ``post(md)`` sends the declaration and returns the new file id, or
        None when the catalogue says the name exists (then the idempotency rule decides).
        Parents must be known; with ``exclusive_tier`` the not-merged-twice check is made
        immediately before ``post`` and the lineage read again after it.
        """
        name = md["file_name"]
        parents = parent_names(md)
        known = self.records(parents)
        missing = [parent for parent in parents if parent not in known]
        if missing:
            raise unknown_parent_error(name, missing)
        if exclusive_tier is not None and parents:
            others = self.exclusive_conflicts(md, exclusive_tier)
            if others:
                raise already_merged_error(name, others)
        file_id = post(md)
        if file_id is None:
            existing = self.get(name)
            check_redeclaration(existing, md)
            result = DeclareResult(name, ALREADY_DECLARED, existing.get("file_id"))
        else:
            result = DeclareResult(name, DECLARED, file_id)
        self.forget(name)
        if exclusive_tier is not None and parents:
            others = self.conflicts_after(md, exclusive_tier)
            if others:
                raise already_merged_error(name, others, after=True)
        return result

    @abstractmethod
    def children(self, file_name: str) -> list[str]:
        """Names of the files that list ``file_name`` as a parent, sorted."""

    @abstractmethod
    def parents(self, file_name: str) -> list[str]:
        """Names of the parents of ``file_name``, in declared order."""

    @abstractmethod
    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        """Names of the files having a ``runs`` entry of ``run`` and/or of ``data_tier``, sorted."""

    def close(self) -> None:
        """Release connections; the catalogue cannot be used afterwards."""
        return None  # the default: a backend holding no connection has nothing to release

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def placeholder_metadata(file_name: str) -> dict:
    """A minimal record for a parent with no metadata of its own (``--declare-parents``)."""
    return {
        "file_name": file_name,
        PLACEHOLDER_PARAMETER: "declared by tmbmerge as a parent known only by name",
    }


def is_placeholder(metadata: dict) -> bool:
    return PLACEHOLDER_PARAMETER in metadata


def prepare_declaration(metadata: dict) -> dict:
    """Validate metadata to declare and return it normalized (checksums as ``adler32:``)."""
    md = normalize_metadata(metadata)
    if "file_size" not in md and not is_placeholder(md):
        raise MetadataError(
            "file_size: missing (a declaration needs the size in bytes)", path=md["file_name"]
        )
    return md


def check_redeclaration(existing: dict, new: dict) -> None:
    """Raise ``DeclarationConflict`` unless ``new`` describes the same bytes as ``existing``.

    Same bytes means the same ``file_size`` and the same adler32 (both absent counts as the
    same).  Other fields may differ: the record first declared is kept.  A placeholder only
    asks for the name to exist, so any existing record satisfies it; a full record does not
    replace a placeholder (that would rewrite history silently), it conflicts.
    """
    name = new["file_name"]
    if is_placeholder(new):
        return
    if is_placeholder(existing):
        raise DeclarationConflict(
            "declared already as a placeholder (name only); its metadata cannot be added here",
            path=name,
        )
    if existing.get("file_size") != new.get("file_size"):
        raise DeclarationConflict(
            "declared already with a different file_size",
            path=name,
            expected=existing.get("file_size", "none"),
            actual=new.get("file_size", "none"),
        )
    old_adler = adler32_from_checksums(existing.get("checksum"), existing.get("file_size"))
    new_adler = adler32_from_checksums(new.get("checksum"), new.get("file_size"))
    if old_adler != new_adler:
        raise DeclarationConflict(
            "declared already with a different adler32",
            path=name,
            expected=format_adler32(old_adler) if old_adler is not None else "none",
            actual=format_adler32(new_adler) if new_adler is not None else "none",
        )


def chunks(names: list[str], size: int = BATCH_SIZE):
    for start in range(0, len(names), size):
        yield names[start : start + size]


def not_available(backend: str, operation: str) -> CatalogError:
    return CatalogError(f"{backend} catalogues are declare-only: {operation} is not available")
