"""The catalogue interface every backend implements, and the declaration rules they share.

A catalogue speaks SAM: records are dicts with SAM's field names, checksums are always
``adler32:<8 lowercase hex>`` on the way out (``enstore:<decimal>`` is accepted on the way in
and converted), lineage is by file name.  Backends differ only in where the records live.

The declaration rules live here so that every backend applies the same ones:

- ``prepare_declaration`` validates the metadata (``normalize_metadata``) and requires
  ``file_size``, except for a *placeholder* (a parent known by name only, see
  ``placeholder_metadata``);
- ``check_redeclaration`` is the idempotency rule: declaring a name again with the same size
  and the same adler32 is success ("already declared"); anything else is a loud
  ``DeclarationConflict``;
- parents must be declared before their children, else ``UnknownParent`` naming them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

from engine.checksums import adler32_from_checksums, format_adler32
from engine.errors import CatalogError, DeclarationConflict, FileNotDeclared, MetadataError, UnknownParent
from engine.metadata import normalize_metadata

DECLARED = "declared"
ALREADY_DECLARED = "already declared"

#: Free-form parameter marking a record made for a parent known only by name.
PLACEHOLDER_PARAMETER = "Catalog.placeholder"


class DeclareResult(NamedTuple):
    """The outcome of one successful declaration."""

    file_name: str
    status: str  # DECLARED or ALREADY_DECLARED
    file_id: int | None  # None when the backend does not report one (exec)


class Catalog(ABC):
    """A file catalogue: SAM records by file name, and the lineage between them.

    ``queryable`` is False for declare-only backends (``exec:``), whose query methods raise
    ``CatalogError``; callers that can do without queries (the declaration hook) check it.
    """

    queryable = True

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options) -> "Catalog":
        """Open the catalogue that ``url`` names (options are backend-specific keywords)."""

    @classmethod
    def require_existing(cls, url: str) -> None:
        """Raise ``CatalogError`` if the catalogue ``url`` names does not exist yet (backends that
        would create one on opening say so here; others exist or fail on their own)."""

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
    def declare(self, metadata: dict) -> DeclareResult:
        """Declare a file (see the module docstring for the rules)."""

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

    def __enter__(self) -> "Catalog":
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
        raise MetadataError("file_size: missing (a declaration needs the size in bytes)", path=md["file_name"])
    return md


def parent_names(metadata: dict) -> list[str]:
    return [parent["file_name"] for parent in metadata.get("parents", [])]


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
            "declared already as a placeholder (name only); its metadata cannot be added here", path=name
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


def unknown_parent_error(file_name: str, missing: list[str]) -> UnknownParent:
    return UnknownParent(
        f"parents not declared: {', '.join(missing)} (declare them first, or use --declare-parents)",
        path=file_name,
    )


def not_available(backend: str, operation: str) -> CatalogError:
    return CatalogError(f"{backend} catalogues are declare-only: {operation} is not available")
