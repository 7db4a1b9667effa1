"""Retiring merged inputs: the temporary storage of unmerged files is emptied, never too early.

Retirement cannot be undone, so it is earned (``check_retirable``, called just before): the
output is re-read and every block digest and its adler32 checked against the journal; the
catalogue's record of it is read back (size, checksum, parents); and every input to retire is
one the output really holds (the journal's ``accepted`` list, never a skipped input), is still
the very file that was planned (same resolved path, st_dev, st_ino, size and mtime; the adler32
the merge computed equals the one its sidecar gave at planning), is among the output's parents
in the catalogue, and its events are exactly the output's events at its place.  Any doubt retires
nothing of that output.

Then (``retire_inputs``) each input and its sidecar is moved into the retirement folder (never
replacing a file already there) or deleted, one at a time, and each is recorded in the journal
as it goes (before it is moved or deleted), so an interrupted retirement resumes where it
stopped and no input is ever gone without a record.  A symlinked input was
resolved at planning: the file it names is retired, and the symlink, which then names nothing,
is removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import (
    CatalogError,
    ChecksumMismatch,
    EngineError,
    InconsistentInputs,
    OutputExists,
    ParameterError,
    SizeMismatch,
    UsageError,
)
from ..metadata import sidecar_path
from ..remote import RemotePath, is_url, location

log = logging.getLogger(__name__)

MOVE, DELETE = "move", "delete"


def check_retirable(
    output: Path, entry, catalog, *, action: str, retire_dir: Path | None
) -> list[dict]:
    """The identities of the inputs ``output`` (journal ``entry``) may retire, or an ``EngineError``
    saying why none may; see the module docstring.  An input an interrupted retirement already
    moved is checked where it went; one it deleted has nothing left to check."""
    from ..readers import open_file

    if not entry.accepted or not entry.identities:
        raise InconsistentInputs(
            "the journal does not record which files this output holds (written by an "
            "older tmbmerge): its inputs are not retired",
            path=output,
        )
    reverify_output(output, entry)
    _check_declared(output, entry, catalog)
    planned = {item["path"]: item for item in entry.identities}
    with open_file(output) as reader:
        runs, events = reader.events.run, reader.events.event
        start, chosen = 0, []
        for item in entry.accepted:
            identity = planned.get(item["path"])
            if identity is None:
                raise InconsistentInputs(
                    "an input the output holds was never planned: its inputs are not retired",
                    path=item["path"],
                )
            count = identity["event_count"]
            _check_identity(
                identity,
                item,
                runs[start : start + count],
                events[start : start + count],
                action=action,
                retire_dir=retire_dir,
            )
            start += count
            chosen.append(identity)
        if start != len(events):
            raise InconsistentInputs(
                "the output holds other events than its journaled inputs: its inputs are not "
                "retired",
                path=output,
            )
    return chosen


def reverify_output(output: Path, entry) -> None:
    """Re-read a published output: every block digest, and its size and adler32 against the
    journal."""
    from ..checksums import format_adler32
    from ..verify import verify_file

    check = verify_file(output, metadata="none")
    if not check.ok:
        raise check.error
    if (check.file_size, format_adler32(check.adler32)) != (entry.file_size, entry.checksum):
        # a size that differs is not a checksum that failed (both: integrity errors, exit 5)
        kind = SizeMismatch if check.file_size != entry.file_size else ChecksumMismatch
        raise kind(
            "the published output is not the one journaled",
            path=output,
            expected=f"{entry.file_size} bytes, {entry.checksum}",
            actual=f"{check.file_size} bytes, {format_adler32(check.adler32)}",
        )


def _check_declared(output: Path, entry, catalog) -> None:
    """The catalogue's own record of the output, read back, is this output with these parents."""
    from ..checksums import adler32_from_checksums, format_adler32

    record = catalog.catalog.get(output.name)
    declared = adler32_from_checksums(record.get("checksum") or [])
    found = (record.get("file_size"), None if declared is None else format_adler32(declared))
    if found != (entry.file_size, entry.checksum):
        raise CatalogError(
            "the catalogue's record of the output differs from the output: its inputs are not "
            "retired",
            path=output,
            expected=f"{entry.file_size} bytes, {entry.checksum}",
            actual=f"{found[0]} bytes, {found[1]}",
        )
    parents = catalog.catalog.parents(output.name)
    names = [location(item["path"]).name for item in entry.accepted]
    if sorted(parents) != sorted(names):
        raise CatalogError(
            "the catalogue's parents of the output are not its inputs: its inputs are not retired",
            path=output,
            expected=", ".join(names),
            actual=", ".join(parents),
        )


def _check_identity(
    identity: dict, merged: dict, runs, events, *, action: str, retire_dir: Path | None
) -> None:
    from ..readers import open_file

    path = location(identity["path"])
    where = path
    if not path.exists() and action == MOVE:  # moved by an interrupted retirement, sidecar not yet
        where = (retire_dir or path.parent / "retired") / path.name
    if not where.exists():
        if action == DELETE:
            return  # deleted by an interrupted retirement
        raise InconsistentInputs(
            "input is gone, and not in the retirement folder: nothing retired", path=path
        )
    if is_url(where):  # a remote file is known by its URL and size (its bytes are compared below)
        now = {"size": where.stat().st_size}
    else:
        stat = os.stat(where)
        now = {
            "device": stat.st_dev,
            "inode": stat.st_ino,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
    if where != path and not is_url(where):
        now.update(device=identity["device"], inode=identity["inode"])  # another filesystem: a copy
    then = {key: identity.get(key) for key in now}
    if now != then:
        raise InconsistentInputs(
            "input is no longer the file that was planned and merged: nothing of its output "
            "is retired",
            path=path,
            expected=then,
            actual=now,
        )
    if (
        None not in (identity.get("adler32"), merged.get("adler32"))
        and merged["adler32"] != identity["adler32"]
    ):
        raise InconsistentInputs(
            "the adler32 merged differs from the one planned: nothing of its output is retired",
            path=path,
        )
    try:
        with open_file(where) as reader:
            same = np.array_equal(reader.events.run, runs) and np.array_equal(
                reader.events.event, events
            )
    except EngineError as exc:
        raise InconsistentInputs(
            f"input cannot be compared with its output ({exc.message}): nothing retired", path=path
        ) from None
    if not same:
        raise InconsistentInputs(
            "input's events are not the output's at its place: nothing of its output is retired",
            path=path,
        )


def retire_inputs(
    inputs, *, action: str, retire_dir: Path | None, record, aliases=None
) -> list[dict]:
    """Move or delete ``inputs`` (and their sidecars); ``record(path, action, destination)`` each.
    ``aliases``: {input: the symlink it was named by}, removed once the input is retired."""
    if action not in (MOVE, DELETE):
        raise ParameterError(
            f"action must be move or delete, not {action!r}", parameters=("retire",)
        )
    done = []
    aliases = aliases or {}
    for path in map(location, inputs):  # local paths, or files on remote storage
        # an earlier, interrupted attempt may have retired the data file but not its sidecar
        items = [item for item in (path, sidecar_path(path)) if item.exists()]
        if not items:
            continue  # retired by an earlier attempt
        # recorded before anything is moved or deleted (once nothing can refuse it): a kill in
        # between leaves a journaled retirement that the next attempt finishes, never an input
        # gone without a record
        if action == DELETE:
            record(str(path), action, None)
            for item in items:
                item.unlink()
            destination = None
        else:
            folder = location(retire_dir) if retire_dir else path.parent / "retired"
            folder.mkdir(parents=True, exist_ok=True)
            destination = folder / path.name
            for item in items:  # every target is checked before anything moves
                if (folder / item.name).exists():
                    raise OutputExists(
                        "retirement folder already holds a file of this name",
                        path=folder / item.name,
                    )
            record(str(path), action, str(destination))
            for item in items:
                _move(item, folder / item.name)
        _remove_dangling_alias(aliases.get(str(path)))
        log.info(
            "retired %s (%s)", path, "deleted" if destination is None else f"moved to {destination}"
        )
        done.append(
            {
                "file": str(path),
                "action": action,
                "destination": None if destination is None else str(destination),
            }
        )
    return done


def _remove_dangling_alias(alias) -> None:
    """A symlink that named a retired input names nothing now: remove it (and its sidecar's)."""
    if alias is None:
        return
    for link in (Path(alias), sidecar_path(Path(alias))):
        if link.is_symlink() and not link.exists():
            link.unlink()


def _move(source: Path | RemotePath, target: Path | RemotePath) -> None:
    if isinstance(source, RemotePath) or isinstance(target, RemotePath):
        if not isinstance(source, RemotePath):
            raise UsageError("local inputs retire to a local folder", path=target)
        source.rename_to(target)
        return
    try:
        os.link(source, target)  # same filesystem: atomic, and never replaces
    except FileExistsError:
        raise OutputExists(
            "retirement folder already holds a file of this name", path=target
        ) from None
    except OSError:
        shutil.copy2(source, target)  # another filesystem: copy, make durable, then remove
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.unlink(source)
