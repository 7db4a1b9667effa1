"""The campaign's own tables, kept in the sqlite catalogue beside SAM's records.

What the plan's "common bookkeeping" needs and SAM does not hold: datasets (a run range and
data tier, or an explicit list of runs), which site holds each (one dataset, one site), the
state each is in with its full history (who, when, from what), sites' bearer tokens (only
their SHA-256 is stored: tokens are 256-bit random strings, so a fast hash is enough) and the
certification histograms of each (run, sample).

Unique assignment is the database's job, not the application's: ``campaign_assignments`` has
the dataset as PRIMARY KEY, and a claim is one ``BEGIN IMMEDIATE`` transaction that inserts
the row; of any number of concurrent claims exactly one insert succeeds, the others see the
row and are refused.  The state machine (``STATES``, ``next_states``) is checked inside the same
kind of transaction, so two updates cannot both move a dataset from the same state.

The tables are created (``CREATE TABLE IF NOT EXISTS``) after the catalogue's own schema, so
one file holds both and the catalogue's schema version is not touched.  One connection per
thread (sqlite3 connections are not shared between threads); WAL and a busy timeout as in
``bindings.catalog.sqlite``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from engine.errors import (
    CampaignError,
    CatalogError,
    DatasetTaken,
    IllegalTransition,
    UnknownDataset,
    UsageError,
)
from engine.host import iso_now

#: The plan's states, in order: a dataset moves one step forward at a time.
STATES = ("assigned", "copied-to-site", "processed", "merged", "declared", "copied-back")
RELEASED = "released"  # the holding site gives an assigned dataset back (only before copying)
DEFAULT_TIER = "unmerged-thumbnail"
TOKEN_PREFIX = "tmbs_"
MAX_NAME = 100
MAX_NOTE = 1000
SAMPLES = ("unmerged", "merged")

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_tokens (
    token_hash TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    created    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_datasets (
    name       TEXT PRIMARY KEY,
    first_run  INTEGER,
    last_run   INTEGER,
    data_tier  TEXT NOT NULL,
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    CHECK ((first_run IS NULL) = (last_run IS NULL)
           AND (first_run IS NULL OR first_run <= last_run))
);
CREATE TABLE IF NOT EXISTS campaign_dataset_runs (
    dataset TEXT NOT NULL REFERENCES campaign_datasets (name),
    run     INTEGER NOT NULL,
    PRIMARY KEY (dataset, run)
);
CREATE TABLE IF NOT EXISTS campaign_assignments (
    dataset TEXT PRIMARY KEY REFERENCES campaign_datasets (name),
    site    TEXT NOT NULL,
    state   TEXT NOT NULL,
    since   TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset    TEXT NOT NULL REFERENCES campaign_datasets (name),
    site       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TEXT NOT NULL,
    note       TEXT
);
CREATE INDEX IF NOT EXISTS campaign_history_by_dataset ON campaign_history (dataset, id);
CREATE TABLE IF NOT EXISTS campaign_certification (
    run    INTEGER NOT NULL,
    sample TEXT NOT NULL,
    record TEXT NOT NULL,
    filled TEXT NOT NULL,
    PRIMARY KEY (run, sample)
);
"""


def next_states(state: str | None) -> tuple[str, ...]:
    """The states a dataset in ``state`` may move to (None: not assigned)."""
    if state is None:
        return (STATES[0],)
    if state == STATES[0]:
        return (STATES[1], RELEASED)
    position = STATES.index(state)
    return STATES[position + 1 : position + 2]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(kind: str, name) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME
        or not name.isprintable()
        or name.strip() != name
        or "/" in name
    ):
        raise UsageError(
            f"{kind} name must be 1-{MAX_NAME} printable characters without '/' or surrounding "
            f"spaces, not {name!r}"
        )
    return name


def parse_run_range(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` (or one run) -> (first, last)."""
    first, dash, last = str(text).partition("-")
    try:
        low, high = int(first), int(last if dash else first)
    except ValueError:
        raise UsageError(f"run range {text!r} is not FIRST-LAST (e.g. 178000-178999)") from None
    if low < 0 or high < low:
        raise UsageError(f"run range {text!r}: runs are non-negative and FIRST <= LAST")
    return low, high


class CampaignStore:
    """The campaign tables of one sqlite catalogue file (thread-safe: a connection per thread)."""

    def __init__(self, catalog_url: str, *, busy_timeout: float = 30.0) -> None:
        from bindings.catalog.sqlite import SqliteCatalog, path_from_url

        if not catalog_url.lower().startswith("sqlite:"):
            raise UsageError(
                f"the campaign service keeps its tables in a sqlite catalogue, not {catalog_url!r}"
            )
        self.url = catalog_url
        self.path = path_from_url(catalog_url)
        if not self.path.parent.is_dir():
            raise UsageError("folder of the catalogue does not exist", path=self.path)
        SqliteCatalog(self.path, url=catalog_url).close()  # the catalogue's schema first
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        with self._transaction("IMMEDIATE") as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    # --- connections and transactions ---------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self, mode: str = "DEFERRED"):
        db = self.connection()
        try:
            db.execute(f"BEGIN {mode}")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield db
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> CatalogError:
        return CatalogError(f"campaign database error: {exc}", path=self.path)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- tokens -------------------------------------------------------------------------------
    def add_token(self, site: str) -> str:
        """Issue a new bearer token for ``site``; only its hash is kept, so this is the one chance
        to see it."""
        check_name("site", site)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._transaction("IMMEDIATE") as db:
            db.execute(
                "INSERT INTO campaign_tokens (token_hash, site, created) VALUES (?, ?, ?)",
                (hash_token(token), site, iso_now(utc=True)),
            )
        return token

    def site_of_token(self, token: str) -> str | None:
        row = (
            self.connection()
            .execute("SELECT site FROM campaign_tokens WHERE token_hash = ?", (hash_token(token),))
            .fetchone()
        )
        return row[0] if row else None

    # --- datasets -----------------------------------------------------------------------------
    def add_dataset(
        self,
        name: str,
        *,
        runs: tuple[int, int] | None = None,
        run_list=None,
        data_tier: str = DEFAULT_TIER,
        created_by: str = "cli",
    ) -> dict:
        """Define a dataset: a run range (``runs=(first, last)``) or an explicit ``run_list``."""
        check_name("dataset", name)
        if (runs is None) == (run_list is None):
            raise UsageError(
                "a dataset is a run range or an explicit list of runs (one of the two)"
            )
        if not isinstance(data_tier, str) or not data_tier or len(data_tier) > MAX_NAME:
            raise UsageError(f"data tier must be a non-empty string, not {data_tier!r}")
        if run_list is not None:
            if (
                not isinstance(run_list, (list, tuple))
                or not run_list
                or not all(
                    isinstance(r, int) and not isinstance(r, bool) and 0 <= r <= 0xFFFFFFFF
                    for r in run_list
                )
            ):
                raise UsageError("runs must be a non-empty list of run numbers (0..4294967295)")
        else:
            first, last = runs
            if not (0 <= first <= last <= 0xFFFFFFFF):
                raise UsageError(
                    f"run range {first}-{last}: runs are 0..4294967295 and FIRST <= LAST"
                )
        with self._transaction("IMMEDIATE") as db:
            if db.execute("SELECT 1 FROM campaign_datasets WHERE name = ?", (name,)).fetchone():
                raise CampaignError("dataset exists already", path=name)
            first, last = runs if runs is not None else (None, None)
            db.execute(
                "INSERT INTO campaign_datasets (name, first_run, last_run, data_tier, created, "
                "created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (name, first, last, data_tier, iso_now(utc=True), created_by),
            )
            if run_list is not None:
                db.executemany(
                    "INSERT OR IGNORE INTO campaign_dataset_runs (dataset, run) VALUES (?, ?)",
                    [(name, r) for r in run_list],
                )
        return self.dataset(name)

    def _dataset_row(self, db, name: str) -> dict:
        row = db.execute(
            "SELECT d.name, d.first_run, d.last_run, d.data_tier, d.created, d.created_by, "
            "a.site, a.state, a.since, a.updated FROM campaign_datasets d LEFT JOIN "
            "campaign_assignments a ON a.dataset = d.name WHERE d.name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise UnknownDataset("no such dataset", path=name)
        return self._describe(db, row)

    def _describe(self, db, row) -> dict:
        name, first, last, tier, created, created_by, site, state, since, updated = row
        listed = None
        if first is None:
            listed = [
                r
                for (r,) in db.execute(
                    "SELECT run FROM campaign_dataset_runs WHERE dataset = ? ORDER BY run", (name,)
                )
            ]
        return {
            "name": name,
            "runs": {"first": first, "last": last} if first is not None else {"list": listed},
            "data_tier": tier,
            "created": created,
            "created_by": created_by,
            "site": site,
            "state": state or "open",
            "since": since,
            "updated": updated,
            "next_states": list(next_states(state)),
        }

    def dataset(self, name: str) -> dict:
        with self._transaction() as db:
            described = self._dataset_row(db, name)
            described["history"] = self._history(db, name)
        return described

    def datasets(self) -> list[dict]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT d.name, d.first_run, d.last_run, d.data_tier, d.created, d.created_by, "
                "a.site, a.state, a.since, a.updated FROM campaign_datasets d LEFT JOIN "
                "campaign_assignments a ON a.dataset = d.name ORDER BY d.name"
            ).fetchall()
            return [self._describe(db, row) for row in rows]

    def _history(self, db, name: str) -> list[dict]:
        return [
            {"site": site, "from": old, "to": new, "at": at, "note": note}
            for site, old, new, at, note in db.execute(
                "SELECT site, from_state, to_state, at, note FROM campaign_history WHERE dataset "
                "= ? ORDER BY id",
                (name,),
            )
        ]

    # --- assignment and state ---------------------------------------------------------------
    def claim(self, name: str, site: str, note: str | None = None) -> tuple[dict, bool]:
        """Assign ``name`` to ``site``: (the dataset, True) for the one winner; the holder
        claiming again gets (the dataset, False); any other site ``DatasetTaken``."""
        note = _check_note(note)
        with self._transaction("IMMEDIATE") as db:
            self._dataset_row(db, name)
            stamp = iso_now(utc=True)
            try:
                db.execute(
                    "INSERT INTO campaign_assignments (dataset, site, state, since, updated) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, site, STATES[0], stamp, stamp),
                )
            except sqlite3.IntegrityError:
                holder = db.execute(
                    "SELECT site FROM campaign_assignments WHERE dataset = ?", (name,)
                ).fetchone()[0]
                if holder != site:
                    raise DatasetTaken(f"assigned to {holder} already", path=name) from None
                return self._dataset_row(db, name), False
            db.execute(
                "INSERT INTO campaign_history (dataset, site, from_state, to_state, at, note) "
                "VALUES (?, ?, NULL, ?, ?, ?)",
                (name, site, STATES[0], stamp, note),
            )
            return self._dataset_row(db, name), True

    def set_state(self, name: str, site: str, state: str, note: str | None = None) -> dict:
        """Move the dataset ``site`` holds to ``state`` (the next state, or ``released``)."""
        note = _check_note(note)
        if state not in STATES + (RELEASED,):
            raise UsageError(f"unknown state {state!r} (states: {', '.join(STATES + (RELEASED,))})")
        with self._transaction("IMMEDIATE") as db:
            current = self._dataset_row(db, name)
            if current["site"] is None:
                raise IllegalTransition("is not assigned to any site (claim it first)", path=name)
            if current["site"] != site:
                raise DatasetTaken(f"assigned to {current['site']}, not to {site}", path=name)
            if state not in next_states(current["state"]):
                allowed = " or ".join(next_states(current["state"])) or "nothing (the last state)"
                raise IllegalTransition(
                    f"cannot go from {current['state']} to {state} (next: {allowed})", path=name
                )
            stamp = iso_now(utc=True)
            if state == RELEASED:
                db.execute("DELETE FROM campaign_assignments WHERE dataset = ?", (name,))
            else:
                db.execute(
                    "UPDATE campaign_assignments SET state = ?, updated = ? WHERE dataset = ?",
                    (state, stamp, name),
                )
            db.execute(
                "INSERT INTO campaign_history (dataset, site, from_state, to_state, at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, site, current["state"], state, stamp, note),
            )
            described = self._dataset_row(db, name)
            described["history"] = self._history(db, name)
            return described

    # --- certification histograms -----------------------------------------------------------
    def store_histograms(self, record: dict) -> None:
        if record["sample"] not in SAMPLES:
            raise UsageError(f"sample must be one of {', '.join(SAMPLES)}")
        with self._transaction("IMMEDIATE") as db:
            db.execute(
                "INSERT OR REPLACE INTO campaign_certification (run, sample, record, filled) "
                "VALUES (?, ?, ?, ?)",
                (
                    int(record["run"]),
                    record["sample"],
                    json.dumps(record, separators=(",", ":")),
                    iso_now(utc=True),
                ),
            )

    def histogram_texts(self, run: int) -> dict[str, str]:
        """{sample: stored record, as the JSON text kept} of one run."""
        rows = (
            self.connection()
            .execute("SELECT sample, record FROM campaign_certification WHERE run = ?", (int(run),))
            .fetchall()
        )
        return dict(rows)

    def histogram_records(self, run: int) -> dict[str, dict]:
        """{sample: stored record} of one run."""
        return {sample: json.loads(text) for sample, text in self.histogram_texts(run).items()}

    def certified_runs(self) -> list[int]:
        return [
            r
            for (r,) in self.connection().execute(
                "SELECT DISTINCT run FROM campaign_certification ORDER BY run"
            )
        ]


def _check_note(note) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise UsageError(f"note must be a string of at most {MAX_NOTE} characters")
    return note


def store_path(url: str) -> Path:
    from bindings.catalog.sqlite import path_from_url

    return path_from_url(url)
