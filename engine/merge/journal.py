"""The merge-run journal: a small SQLite file beside the outputs recording what each became.

One row per planned output, with its inputs and its state (``JournalState``)::

    planned -> merging -> verified (safe/deep) | merged (fast) -> declared -> retired
                       \\-> failed (with the error)

A rerun of the same command reads it to skip outputs already finished (when their file is
still there with the recorded size and checksum) and to redo anything else.  Inputs are
recorded by what they are, not how they were named: absolute, resolved paths, and for each
its identity at planning (``identities``: st_dev, st_ino, size, mtime, the adler32 its
record gives) and, once merged, the inputs the output really holds (``accepted``, with
the adler32 the merge computed); only those can ever be retired, and only while their identity
still matches.  The options that shaped the plan (``settings``) are kept, so a rerun that would
plan differently is noticed.  Retired inputs are recorded one row each (``AfterVerified``
moves or deletes inputs only after their output is verified and declared).  SQLite in WAL
mode with a busy timeout, so several processes (parallel jobs, ``tmbmerge status``) can use it
at once; every change is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..host import iso_now

JOURNAL_NAME = ".tmbmerge-journal.sqlite"


class JournalState(StrEnum):
    """What a planned output has become (the ``state`` column).  The values are the strings the
    journal stores, so journals written before this type existed read the same; being ``str``,
    a state compares equal to its text."""

    PLANNED = "planned"  # in the plan, not started (or reset for a rerun)
    MERGING = "merging"  # handed to a worker
    MERGED = "merged"  # published, not re-read (fast mode)
    VERIFIED = "verified"  # published and verified (safe/deep mode)
    DECLARED = "declared"  # declared to the catalogue
    RETIRED = "retired"  # its inputs moved or deleted
    FAILED = "failed"  # with the error in ``error``


#: States of an output that is published and needs no merging on a rerun.
FINISHED = (JournalState.VERIFIED, JournalState.MERGED, JournalState.DECLARED, JournalState.RETIRED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    name        TEXT PRIMARY KEY,
    run         INTEGER NOT NULL,
    inputs      TEXT NOT NULL,          -- JSON list of input paths, in merge order
    state       TEXT NOT NULL,
    mode        TEXT,
    file_size   INTEGER,
    checksum    TEXT,
    event_count INTEGER,
    error       TEXT,
    updated     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_run ON outputs(run);
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL           -- JSON
);
CREATE TABLE IF NOT EXISTS retired (
    input       TEXT PRIMARY KEY,
    output      TEXT NOT NULL REFERENCES outputs(name),
    action      TEXT NOT NULL,          -- move | delete
    destination TEXT,
    at          TEXT NOT NULL
);
"""


@dataclass
class JournalEntry:
    """One output as the journal knows it: name, run, inputs, state and what was verified."""

    name: str
    run: int
    inputs: list[str]
    state: JournalState
    mode: str | None
    file_size: int | None
    checksum: str | None
    event_count: int | None
    error: str | None
    updated: str
    identities: list[dict] | None = (
        None  # per planned input: path, given, device, inode, size, mtime_ns, adler32
    )
    accepted: list[dict] | None = (
        None  # per input the output holds: path, adler32 (None until merged)
    )

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        return dict(self.__dict__)


class Journal:
    """A merge-run's journal: the SQLite record of every planned output's state and retirements."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / JOURNAL_NAME
        with self._errors("open"):
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outputs)")}
        for column in ("identities", "accepted"):  # journals written before these were recorded
            if column not in columns:
                self._transaction(f"ALTER TABLE outputs ADD COLUMN {column} TEXT", ())

    @contextmanager
    def _errors(self, doing: str):
        """A journal that cannot be written (disk full, read-only) or read (damaged): an output
        error naming it, not a bug."""
        try:
            yield
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise OutputError(
                f"cannot {doing} the merge-run journal: {exc}", path=self.path
            ) from None

    @classmethod
    def open_existing(cls, out_dir) -> Journal | None:
        """The journal in ``out_dir``, or None when there is none."""
        return cls(out_dir) if (Path(out_dir) / JOURNAL_NAME).exists() else None

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self, sql: str, params: tuple) -> None:
        with self._errors("write"), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(sql, params)

    def get(self, name: str) -> JournalEntry | None:
        """The entry of output ``name``, or None."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM outputs WHERE name = ?", (name,)).fetchone()
        return _entry(row) if row else None

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry, by run and name."""
        for row in self._db.execute(
            f"SELECT {_COLUMNS} FROM outputs ORDER BY run, name"
        ).fetchall():
            yield _entry(row)

    def record_plan(
        self,
        name: str,
        run: int,
        inputs: list[str],
        mode: str,
        identities: list[dict] | None = None,
    ) -> None:
        """Insert a planned output, or reset an unfinished one to ``planned`` with these inputs."""
        self._transaction(
            "INSERT INTO outputs (name, run, inputs, state, mode, updated, identities) VALUES "
            "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET run = excluded.run, inputs = "
            "excluded.inputs, state = excluded.state, mode = excluded.mode, error = NULL, "
            "updated = excluded.updated, identities = excluded.identities, accepted = NULL",
            (
                name,
                run,
                json.dumps(inputs),
                JournalState.PLANNED,
                mode,
                iso_now(),
                None if identities is None else json.dumps(identities),
            ),
        )

    def set_state(
        self,
        name: str,
        state: JournalState,
        *,
        error: str | None = None,
        file_size: int | None = None,
        checksum: str | None = None,
        event_count: int | None = None,
        accepted: list[dict] | None = None,
    ) -> None:
        """Move output ``name`` to ``state``, recording what is given with it."""
        self._transaction(
            "UPDATE outputs SET state = ?, error = ?, file_size = COALESCE(?, file_size), "
            "checksum = COALESCE(?, checksum), event_count = COALESCE(?, event_count), "
            "accepted = COALESCE(?, accepted), updated = ? WHERE name = ?",
            (
                state,
                error,
                file_size,
                checksum,
                event_count,
                None if accepted is None else json.dumps(accepted),
                iso_now(),
                name,
            ),
        )

    def settings(self) -> dict[str, Any]:
        """The options the journal's plan was made with (empty for a new journal)."""
        return {
            key: json.loads(value)
            for key, value in self._db.execute("SELECT key, value FROM settings")
        }

    def record_settings(self, settings: dict[str, Any]) -> None:
        """Record the run's plan options (a rerun with others is refused)."""
        with self._errors("write"), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for key, value in settings.items():
                self._db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                    (key, json.dumps(value)),
                )

    def forget(self, name: str) -> None:
        """Drop an unfinished output from the journal (it is planned afresh)."""
        self._transaction("DELETE FROM outputs WHERE name = ?", (name,))

    def record_retired(
        self, input_path: str, output: str, action: str, destination: str | None
    ) -> None:
        """Record that ``input_path`` was retired (moved or deleted) for ``output``."""
        self._transaction(
            "INSERT OR REPLACE INTO retired (input, output, action, destination, at) VALUES (?, "
            "?, ?, ?, ?)",
            (input_path, output, action, destination, iso_now()),
        )

    def retired(self, output: str | None = None) -> list[dict[str, Any]]:
        """The retirements recorded, of ``output`` or of all outputs."""
        sql = "SELECT input, output, action, destination, at FROM retired"
        params: tuple[str, ...] = ()
        if output is not None:
            sql, params = sql + " WHERE output = ?", (output,)
        return [
            dict(zip(("input", "output", "action", "destination", "at"), row, strict=True))
            for row in self._db.execute(sql + " ORDER BY input", params)
        ]

    def summary(self) -> dict[str, int]:
        """How many outputs are in each state."""
        return {
            state: count
            for state, count in self._db.execute(
                "SELECT state, COUNT(*) FROM outputs GROUP BY state ORDER BY state"
            )
        }


_COLUMNS = (
    "name, run, inputs, state, mode, file_size, checksum, event_count, error, updated, "
    "identities, accepted"
)


def _entry(row) -> JournalEntry:
    name, run, inputs, state, mode, size, checksum, events, error, updated, identities, accepted = (
        row
    )
    return JournalEntry(
        name,
        run,
        json.loads(inputs),
        JournalState(state),
        mode,
        size,
        checksum,
        events,
        error,
        updated,
        None if identities is None else json.loads(identities),
        None if accepted is None else json.loads(accepted),
    )
