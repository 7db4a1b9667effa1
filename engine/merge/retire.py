"""Retiring merged inputs: the temporary storage of unmerged files is emptied, never too early.

Only an output that is verified *and* declared retires its inputs (``merge_run`` checks both
before calling here).  Each input and its sidecar is moved into the retirement folder (never
replacing a file already there) or deleted, one at a time, and each is recorded in the journal
as it goes, so an interrupted retirement resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..errors import OutputExists, UsageError
from ..metadata import sidecar_path

log = logging.getLogger(__name__)

MOVE, DELETE = "move", "delete"


def retire_inputs(inputs, *, action: str, retire_dir: Path | None, record) -> list[dict]:
    """Move or delete ``inputs`` (and their sidecars); ``record(path, action, destination)`` each."""
    if action not in (MOVE, DELETE):
        raise UsageError(f"--retire-inputs takes move or delete, not {action!r}")
    done = []
    for path in map(Path, inputs):
        # an earlier, interrupted attempt may have retired the data file but not its sidecar
        items = [item for item in (path, sidecar_path(path)) if item.exists()]
        if not items:
            continue   # retired by an earlier attempt
        if action == DELETE:
            for item in items:
                item.unlink()
            destination = None
        else:
            folder = retire_dir or path.parent / "retired"
            folder.mkdir(parents=True, exist_ok=True)
            destination = folder / path.name
            for item in items:   # every target is checked before anything moves
                if (folder / item.name).exists():
                    raise OutputExists("retirement folder already holds a file of this name",
                                       path=folder / item.name)
            for item in items:
                _move(item, folder / item.name)
        record(str(path), action, None if destination is None else str(destination))
        log.info("retired %s (%s)", path, "deleted" if destination is None else f"moved to {destination}")
        done.append({"file": str(path), "action": action, "destination": None if destination is None
                     else str(destination)})
    return done


def _move(source: Path, target: Path) -> None:
    try:
        os.link(source, target)      # same filesystem: atomic, and never replaces
    except FileExistsError:
        raise OutputExists("retirement folder already holds a file of this name", path=target) from None
    except OSError:
        shutil.copy2(source, target)  # another filesystem: copy, make durable, then remove
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.unlink(source)
