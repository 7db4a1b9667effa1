"""The one exception hierarchy of tmbmerge, and the process exit code of each kind of failure.

Every failure a user can cause (bad input, a corrupt file, a clash at the destination, a
catalogue that says no) is an ``EngineError``; an interruption by a signal is ``Interrupted``,
a ``KeyboardInterrupt``, so that nothing that handles bad inputs can swallow it.  Each class
carries its own exit code, so the command line never decides exit codes ad hoc, and each instance
carries where the problem is: the file, the region of the file (``header``, ``metadata``,
``block 12``, ``index``,
``trailer``), the byte offset, and the expected and actual values where there are any.
``str(error)`` is the one-line message printed to the user.

Classes also inherit the matching built-in where one exists (``InputNotFound`` is a
``FileNotFoundError``), so callers can catch what they already know.

Exit codes (documented in README.md):

====  =====================================================================
0     success
1     internal error (a bug: please report it)
2     usage error (bad options, nothing to do; ``ParameterError`` names the
      API parameters, which the command line turns into its flags)
3     input error (missing or unreadable file)
4     format error (not a TMB file, unsupported version, bad metadata)
5     integrity error (checksum or size mismatch, truncation, broken framing)
6     consistency error (sidecar/catalogue disagrees, duplicate events,
      inputs that must not be merged together, event counts or events
      that differ)
7     output error (destination exists, locked by another merge, disk
      full, read-only or uncreatable output folder, journal not writable,
      Dask scheduler unreachable)
8     catalogue error (declaration failed or conflicts, parents unknown,
      already merged, incomplete run, catalogue unreachable or damaged)
130   interrupted (SIGINT / SIGTERM)
====  =====================================================================
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .remote import RemotePath

EXIT_OK = 0
EXIT_INTERNAL = 1


def _path_text(path) -> str:
    """A local path, or a URL (``engine.remote.RemotePath`` has no ``__fspath__``), as text."""
    return os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)


class EngineError(Exception):
    """Base of every error tmbmerge reports to a user."""

    exit_code = EXIT_INTERNAL

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | RemotePath | None = None,
        region: str | None = None,
        offset: int | None = None,
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        self.message = message
        self.path = _path_text(path) if path is not None else None
        self.region = region
        self.offset = offset
        self.expected = expected
        self.actual = actual
        super().__init__(str(self))

    def __reduce__(self):
        # Keep path, region, offset, values (and an exit code set on the instance) across processes.
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.path,
                self.region,
                self.offset,
                self.expected,
                self.actual,
            ),
            self.__dict__,
        )

    @property
    def kind(self) -> str:
        """The error's class name (``ChecksumMismatch``), as reports show it."""
        return type(self).__name__

    def __str__(self) -> str:
        where = []
        if self.region is not None:
            where.append(self.region)
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        text = ", ".join(where)
        line = f"{self.path}: " if self.path else ""
        line += f"{text}: {self.message}" if text else self.message
        if self.expected is not None or self.actual is not None:
            line += f" (expected {self.expected}, found {self.actual})"
        return line

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, for ``--json`` reports and merged-file metadata."""
        out: dict[str, Any] = {
            "error": self.kind,
            "message": self.message,
            "text": str(self),
            "exit_code": self.exit_code,
        }
        for key in ("path", "region", "offset", "expected", "actual"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value if isinstance(value, (int, str, float, bool)) else str(value)
        return out

    def located(self, region: str | None = None, offset: int | None = None) -> EngineError:
        """Return this error placed at ``region`` and ``offset`` where it does not say already
        (used when a codec or a source raised it without knowing which block it was reading)."""
        if self.region is None:
            self.region = region
        if self.offset is None:
            self.offset = offset
        self.args = (str(self),)
        return self

    def with_path(self, path: str | os.PathLike) -> EngineError:
        """Return this error naming ``path`` (used when a parser saw bytes, not a file)."""
        if self.path is None:
            self.path = _path_text(path)
            self.args = (str(self),)
        return self


#: When one command reports several failures, its exit code is the first of these present:
#: damaged data outranks disagreeing records, which outranks foreign or unreadable files.
EXIT_PRECEDENCE = (130, 5, 6, 4, 3, 8, 7, 2, 1)


def most_severe_exit_code(codes) -> int:
    """The exit code for a set of failures (0 when there are none)."""
    present = {c for c in codes if c}
    for code in EXIT_PRECEDENCE:
        if code in present:
            return code
    return max(present, default=EXIT_OK)


def _rebuild(cls, message, path, region, offset, expected, actual):
    error = cls.__new__(cls)  # subclasses may take other constructor arguments
    EngineError.__init__(
        error, message, path=path, region=region, offset=offset, expected=expected, actual=actual
    )
    return error


class UsageError(EngineError):
    """The request itself is wrong: bad option values, nothing to do."""

    exit_code = 2


class ParameterError(UsageError):
    """A call's parameters are wrong or do not go together; ``parameters`` names them as the
    API spells them (``threads``), so that a command line can name its own flags for them."""

    def __init__(self, message: str, *, parameters: tuple[str, ...] = (), **where: Any) -> None:
        self.parameters = parameters
        super().__init__(message, **where)


class InputError(EngineError, OSError):
    """An input path cannot be read."""

    exit_code = 3


class InputNotFound(InputError, FileNotFoundError):
    """An input path does not exist."""


class InputChanged(InputError):
    """An input is no longer the file that was planned (swapped, rewritten or gone since merge-run
    planned it)."""


class FormatError(EngineError, ValueError):
    """The bytes are not a TMB file this version can read."""

    exit_code = 4


class NotATmbFile(FormatError):
    """No reader recognises the file's magic bytes."""


class UnsupportedVersion(FormatError):
    """A TMB file of a format version this tmbmerge does not read."""


class MetadataError(FormatError):
    """Metadata (the header's JSON, a sidecar, a catalogue record) is malformed."""


class IntegrityError(EngineError):
    """The bytes are damaged: a digest does not match, a length is impossible, data is missing."""

    exit_code = 5


class ChecksumMismatch(IntegrityError):
    """A digest computed from the bytes differs from the stored one."""


class SizeMismatch(IntegrityError):
    """A size or count of the bytes (a file's length, the blocks read back) differs from the one
    expected: nothing was hashed wrong, the bytes are not the ones meant."""


class IndexMismatch(IntegrityError):
    """A record decoded from a block is not the one the file's index lists for it (another run,
    event number or length): every digest holds, the file contradicts itself."""


class TruncatedFile(IntegrityError):
    """The file ends before its structure does (no valid trailer, short block, ...)."""


class LayoutError(IntegrityError):
    """Lengths, offsets or counts that cannot be right (overlaps, gaps, out-of-bounds sizes)."""


class FramingError(IntegrityError):
    """The event records inside a decompressed block do not parse."""


class DecompressionError(IntegrityError):
    """A block's codec failed to decode its bytes."""


class ConsistencyError(EngineError):
    """Files are individually sound but disagree with each other or with their records
    (sidecar, catalogue)."""

    exit_code = 6


class AllInputsRejected(ConsistencyError):
    """No input of a merge survived validation; exits with the most severe of their codes."""

    def __init__(self, rejected, *, path=None):
        reasons = "; ".join(str(error) for error in rejected)
        super().__init__(f"every input was rejected, nothing to merge: {reasons}", path=path)
        self.exit_code = most_severe_exit_code(error.exit_code for error in rejected)


class MetadataMismatch(ConsistencyError):
    """A file disagrees with its sidecar or catalogue record (size, adler32, event count, name)."""


class MetadataMissing(ConsistencyError):
    """A mode that crosschecks inputs with their records found an input without one."""


class DuplicateEvents(ConsistencyError):
    """The same (run, event) appears twice among the inputs of one merge."""


class InconsistentInputs(ConsistencyError):
    """Inputs that must not be merged together (mixed runs, tiers, versions, no events)."""


class EventMismatch(ConsistencyError):
    """A merged output's event is not its input's: another run or event number, length or
    payload digest at the same place."""


class EventCountMismatch(ConsistencyError):
    """The merged output does not hold as many events as its inputs together."""


class OutputError(EngineError):
    """The destination cannot be written as asked."""

    exit_code = 7


class OutputExists(OutputError, FileExistsError):
    """The output already exists and ``--force`` was not given."""


class OutputLocked(OutputError):
    """Another merge is writing the same output right now."""


class OutputIsInput(OutputError):
    """The output names one of the inputs (or its sidecar): by name, symlink or hard link."""


class CatalogError(EngineError):
    """The catalogue refused or failed a request."""

    exit_code = 8


class CatalogUnavailable(CatalogError):
    """The catalogue cannot be reached or answered with a server error."""


class DeclarationConflict(CatalogError):
    """A file of this name is declared already, with a different size or checksum."""


class FileNotDeclared(CatalogError, KeyError):
    """The catalogue has no file of this name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return EngineError.__str__(self)


class UnknownParent(CatalogError):
    """A file's parents are not declared in the catalogue."""


class AlreadyMerged(CatalogError):
    """An input already has a merged child in the catalogue (the merged-twice check)."""


class IncompleteRun(CatalogError):
    """The catalogue lists unmerged files of the run that are not among the inputs."""


class CampaignError(CatalogError):
    """The campaign bookkeeping (``tmbmerge serve``) refused a request."""


class UnknownDataset(CampaignError):
    """No dataset of that name is defined."""


class DatasetTaken(CampaignError):
    """The dataset is assigned to another site (one dataset, one site)."""


class IllegalTransition(CampaignError):
    """A dataset state change that the campaign's state machine does not allow."""


class CertificationFailed(ConsistencyError):
    """Merged files whose histograms differ from their unmerged inputs'."""


class ExecutorUnavailable(OutputError):
    """The executor that should make the outputs (a Dask scheduler) cannot be reached."""


#: errno values that say a destination cannot be written (full, over quota, too big, read-only).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def os_reason(exc: OSError) -> str:
    """What the operating system said about ``exc`` (``Permission denied``), for a one-line
    message."""
    return exc.strerror or str(exc) or type(exc).__name__


def output_error(exc: OSError, path, doing: str = "write", **where) -> OutputError:
    """An ``OSError`` met writing an output (or its sidecar, journal, folder) as an ``OutputError``
    naming the file a user knows (the destination, not a hidden temporary name); ``where``
    (``region``, ``offset``) says where in the file."""
    return OutputError(f"cannot {doing}: {os_reason(exc)}", path=path, **where)


def input_error(exc: OSError, path, doing: str = "read", **where) -> InputError:
    """An ``OSError`` met opening or reading an input (or its sidecar) as the ``InputError`` of
    its kind, naming ``path``: a missing file is ``InputNotFound``; a directory and a file without
    permission are said so; anything else is ``cannot <doing>: <what the system said>``.
    ``where`` (``region``, ``offset``) says where in the file."""
    if isinstance(exc, FileNotFoundError):
        return InputNotFound("no such file", path=path, **where)
    if isinstance(exc, IsADirectoryError):
        return InputError("is a directory, not a file", path=path, **where)
    if isinstance(exc, PermissionError):
        return InputError("permission denied", path=path, **where)
    return InputError(f"cannot {doing}: {os_reason(exc)}", path=path, **where)


def world_error(exc: BaseException) -> EngineError | None:
    """An exception of the outside world that escaped the engine, as the ``EngineError`` of its
    kind, or None when it is a bug.  The last net of the command line and of ``merge-run``:
    errors are meant to be translated where they happen, naming the file and what was being done.

    A disk that is full, over quota or read-only is an output error (7); any other ``OSError``
    (permissions, a path that vanished, I/O errors) is a path that cannot be used: input error
    (3).  Both name the file the operating system named."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else None
        message = os_reason(exc)
        if exc.errno in WRITE_ERRNOS:
            return OutputError(f"cannot write: {message}", path=where)
        return InputError(f"cannot use this path: {message}", path=where)
    return None


class Interrupted(KeyboardInterrupt):
    """The operation was interrupted by a signal (SIGINT, or SIGTERM turned into this).

    Deliberately not an ``EngineError``: code that records a bad input and goes on
    (``except EngineError``) must never swallow an interruption; like Ctrl-C it unwinds
    everything, running every cleanup on the way, and the command exits 130.  The merge commands
    say what the interruption left at the destination: ``published`` (outputs that stand) and
    ``not_published`` (their paths).
    """

    exit_code = 130

    def __init__(self, *args, published: Iterable[str] = (), not_published: Iterable[str] = ()):
        super().__init__(*args)
        self.published = list(published)
        self.not_published = list(not_published)
