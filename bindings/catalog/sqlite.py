"""The embedded catalogue: SAM records in one SQLite file, shared safely by many processes.

URLs: ``sqlite:///absolute/path/catalog.db`` (URL form, empty host) or ``sqlite:relative.db``
(``sqlite:/absolute.db`` and ``~`` work too).  The file and its tables are created on first use.

Strategy: the schema follows SAM's own split, so that the questions a merge asks are index
lookups, not scans of JSON: ``files`` (one row per file, the fixed fields as columns, free-form
``Category.name`` parameters and other fields as a JSON ``params`` column), ``checksums``,
``runs`` and ``parents`` (child -> parent, kept in declared order), each indexed the way it is
queried (file by name, runs by run number, lineage by parent and by child).

Concurrency: WAL journal (readers never wait for the writer), a busy timeout (writers queue
for each other instead of failing), and every declaration is one ``BEGIN IMMEDIATE``
transaction: the existence check, the parent check and the inserts happen under the write
lock, so N processes declaring the same file at once produce one record, one "declared" and
N-1 "already declared".  One ``SqliteCatalog`` is one connection: use one per process (or
per thread).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from engine.errors import CatalogError, CatalogUnavailable, FileNotDeclared, UsageError
from engine.metadata import now_iso

from .base import (
    ALREADY_DECLARED,
    DECLARED,
    Catalog,
    DeclareResult,
    already_merged_error,
    check_redeclaration,
    chunks,
    parent_names,
    prepare_declaration,
    unknown_parent_error,
)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE files (
    file_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    file_name      TEXT NOT NULL UNIQUE,
    file_size      INTEGER,
    file_type      TEXT,
    file_format    TEXT,
    data_tier      TEXT,
    data_stream    TEXT,
    content_status TEXT,
    group_name     TEXT,
    user_name      TEXT,
    app_family     TEXT,
    app_name       TEXT,
    app_version    TEXT,
    event_count    INTEGER,
    first_event    INTEGER,
    last_event     INTEGER,
    start_time     TEXT,
    end_time       TEXT,
    params         TEXT NOT NULL DEFAULT '{}',
    create_date    TEXT NOT NULL
);
CREATE INDEX files_by_tier ON files (data_tier);

CREATE TABLE checksums (
    file_id   INTEGER NOT NULL REFERENCES files (file_id),
    algorithm TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (file_id, algorithm)
);

CREATE TABLE runs (
    file_id    INTEGER NOT NULL REFERENCES files (file_id),
    position   INTEGER NOT NULL,
    run_number INTEGER NOT NULL,
    subrun     INTEGER NOT NULL,
    run_type   TEXT NOT NULL,
    PRIMARY KEY (file_id, position)
);
CREATE INDEX runs_by_run ON runs (run_number, file_id);

CREATE TABLE parents (
    child_id  INTEGER NOT NULL REFERENCES files (file_id),
    parent_id INTEGER NOT NULL REFERENCES files (file_id),
    position  INTEGER NOT NULL,
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX parents_by_parent ON parents (parent_id, child_id);
"""

#: SAM field -> column of ``files`` (the rest, but for lineage, runs and checksums, is ``params``).
COLUMNS = {
    "file_size": "file_size",
    "file_type": "file_type",
    "file_format": "file_format",
    "data_tier": "data_tier",
    "data_stream": "data_stream",
    "content_status": "content_status",
    "group": "group_name",
    "user": "user_name",
    "event_count": "event_count",
    "first_event": "first_event",
    "last_event": "last_event",
    "start_time": "start_time",
    "end_time": "end_time",
}
APPLICATION_COLUMNS = {"family": "app_family", "name": "app_name", "version": "app_version"}
#: Fields the catalogue assigns itself; values in a declaration are not stored.
ASSIGNED_FIELDS = ("file_id", "create_date")
SEPARATE_FIELDS = ("file_name", "application", "checksum", "runs", "parents") + ASSIGNED_FIELDS


def path_from_url(url: str) -> Path:
    """The database path named by a ``sqlite:`` URL."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not rest:
        raise UsageError(
            f"{url!r} is not a sqlite catalogue URL (sqlite:///abs/path.db or sqlite:relative.db)"
        )
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host not in ("", "localhost") or not path:
            raise UsageError(f"{url!r}: a sqlite catalogue is a local file (sqlite:///abs/path.db)")
        rest = slash + path
    return Path(unquote(rest)).expanduser()


class SqliteCatalog(Catalog):
    """The catalogue in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        url: str | None = None,
        busy_timeout: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(url or f"sqlite:{self.path}", deadline=deadline)
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open the catalogue: {exc}", path=self.path) from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._create_schema()
        except (
            sqlite3.Error,
            UnicodeDecodeError,
        ) as exc:  # a damaged file can hold undecodable schema text
            self._db.close()
            raise self._error(exc) from None
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def require_existing(cls, url: str) -> None:
        path = path_from_url(url)
        if not path.exists():
            raise CatalogError(
                "no catalogue here (a mistyped path?); `tmbmerge catalog import` creates one",
                path=path,
            )

    @classmethod
    def from_url(
        cls, url: str, *, busy_timeout: float = 60.0, deadline: float | None = None
    ) -> SqliteCatalog:
        return cls(path_from_url(url), url=url, busy_timeout=busy_timeout, deadline=deadline)

    def close(self) -> None:
        self._db.close()

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def _transaction(self, mode: str = "DEFERRED"):
        """One transaction, counted as one request of the budget (with its wait for the lock)."""
        self.budget.check(self.url)
        started = time.monotonic()
        try:
            with self._raw_transaction(mode) as db:
                yield db
        finally:
            self.budget.spend(time.monotonic() - started)

    @contextmanager
    def _raw_transaction(self, mode: str):
        try:
            self._db.execute(f"BEGIN {mode}")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield self._db
        except (
            sqlite3.Error,
            UnicodeDecodeError,
            OverflowError,
        ) as exc:  # OverflowError: over 2**63-1
            self._db.execute("ROLLBACK")
            raise self._error(exc) from None
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> CatalogError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CatalogUnavailable(f"catalogue busy: {text}", path=self.path)
        return CatalogError(f"catalogue database error: {text}", path=self.path)

    def _create_schema(self) -> None:
        with self._transaction("IMMEDIATE") as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise CatalogError(
                        "not a tmbmerge catalogue (tables without a schema version)", path=self.path
                    )
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalogue schema version {version} is newer than this tmbmerge reads "
                    f"({SCHEMA_VERSION})",
                    path=self.path,
                )

    # --- reading ------------------------------------------------------------------------

    def _file_id(self, db, file_name: str) -> int | None:
        row = db.execute("SELECT file_id FROM files WHERE file_name = ?", (file_name,)).fetchone()
        return row[0] if row else None

    def _require_id(self, db, file_name: str) -> int:
        file_id = self._file_id(db, file_name)
        if file_id is None:
            raise FileNotDeclared("not declared in the catalogue", path=file_name)
        return file_id

    def _record(self, db, file_id: int) -> dict:
        return self._records(db, [file_id])[file_id]

    def _records(self, db, file_ids: list[int]) -> dict[int, dict]:
        """Records of ``file_ids``: one statement per table, whatever their number."""
        marks = ", ".join("?" * len(file_ids))
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(
                f"SELECT * FROM files WHERE file_id IN ({marks})", file_ids
            ).fetchall()
        finally:
            db.row_factory = None
        records: dict[int, dict] = {}
        for row in rows:
            md: dict = {"file_name": row["file_name"], "file_id": row["file_id"]}
            for field, column in COLUMNS.items():
                if row[column] is not None:
                    md[field] = row[column]
            if row["app_family"] is not None:
                md["application"] = {
                    field: row[column] for field, column in APPLICATION_COLUMNS.items()
                }
            md["_params"], md["_create_date"] = row["params"], row["create_date"]
            records[row["file_id"]] = md
        for file_id, algorithm, value in db.execute(
            f"SELECT file_id, algorithm, value FROM checksums WHERE file_id IN ({marks})"
            " ORDER BY file_id, algorithm != 'adler32', algorithm",
            file_ids,
        ):
            records[file_id].setdefault("checksum", []).append(f"{algorithm}:{value}")
        for file_id, *run in db.execute(
            f"SELECT file_id, run_number, subrun, run_type FROM runs WHERE file_id IN ({marks})"
            " ORDER BY file_id, position",
            file_ids,
        ):
            records[file_id].setdefault("runs", []).append(run)
        for file_id, name in db.execute(
            "SELECT p.child_id, f.file_name FROM parents p JOIN files f ON f.file_id = p.parent_id"
            f" WHERE p.child_id IN ({marks}) ORDER BY p.child_id, p.position",
            file_ids,
        ):
            records[file_id].setdefault("parents", []).append({"file_name": name})
        for md in records.values():
            params, create_date = md.pop("_params"), md.pop("_create_date")
            md.update(json.loads(params))
            md["create_date"] = create_date
        return records

    def _parent_names(self, db, file_id: int) -> list[str]:
        rows = db.execute(
            "SELECT f.file_name FROM parents p JOIN files f ON f.file_id = p.parent_id"
            " WHERE p.child_id = ? ORDER BY p.position",
            (file_id,),
        ).fetchall()
        return [name for (name,) in rows]

    def fetch_records(self, names: list[str]) -> dict[str, dict]:
        if not names:
            return {}
        with self._transaction() as db:
            ids = [
                file_id
                for (file_id,) in db.execute(
                    f"SELECT file_id FROM files WHERE file_name IN ({', '.join('?' * len(names))})",
                    names,
                )
            ]
            records = self._records(db, ids) if ids else {}
        return {md["file_name"]: md for md in records.values()}

    def children_of(self, names, *, data_tier: str | None = None) -> dict[str, list[str]]:
        names = list(dict.fromkeys(names))
        out: dict[str, list[str]] = {name: [] for name in names}
        for batch in chunks(names):
            query = (
                "SELECT parent.file_name, child.file_name FROM files parent JOIN parents p ON "
                "p.parent_id = parent.file_id JOIN files child ON child.file_id = p.child_id "
                f"WHERE parent.file_name IN ({', '.join('?' * len(batch))})"
            )
            args = list(batch)
            if data_tier is not None:
                query += " AND child.data_tier = ?"
                args.append(data_tier)
            with self._transaction() as db:
                for parent, child in db.execute(query + " ORDER BY child.file_name", args):
                    out[parent].append(child)
        return out

    def get(self, file_name: str) -> dict:
        with self._transaction() as db:
            return self._record(db, self._require_id(db, file_name))

    def exists(self, file_name: str) -> bool:
        with self._transaction() as db:
            return self._file_id(db, file_name) is not None

    def children(self, file_name: str) -> list[str]:
        with self._transaction() as db:
            file_id = self._require_id(db, file_name)
            rows = db.execute(
                "SELECT f.file_name FROM parents p JOIN files f ON f.file_id = p.child_id"
                " WHERE p.parent_id = ? ORDER BY f.file_name",
                (file_id,),
            ).fetchall()
        return [name for (name,) in rows]

    def parents(self, file_name: str) -> list[str]:
        with self._transaction() as db:
            return self._parent_names(db, self._require_id(db, file_name))

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        query = "SELECT DISTINCT f.file_name FROM files f"
        args: list = []
        if run is not None:
            query += " JOIN runs r ON r.file_id = f.file_id AND r.run_number = ?"
            args.append(int(run))
        if data_tier is not None:
            query += " WHERE f.data_tier = ?"
            args.append(data_tier)
        query += " ORDER BY f.file_name"
        with self._transaction() as db:
            return [name for (name,) in db.execute(query, args).fetchall()]

    # --- declaring ----------------------------------------------------------------------

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        md = prepare_declaration(metadata)
        name = md["file_name"]
        with self._transaction("IMMEDIATE") as db:
            existing_id = self._file_id(db, name)
            if existing_id is not None:
                check_redeclaration(self._record(db, existing_id), md)
                return DeclareResult(name, ALREADY_DECLARED, existing_id)
            parent_ids = []
            missing = []
            for parent in parent_names(md):
                parent_id = self._file_id(db, parent)
                if parent_id is None:
                    missing.append(parent)
                parent_ids.append(parent_id)
            if missing:
                raise unknown_parent_error(name, missing)
            if exclusive_tier is not None and parent_ids:
                # under the same write lock as the insert: no other declaration can come between
                others = [
                    other
                    for (other,) in db.execute(
                        "SELECT DISTINCT f.file_name FROM parents p JOIN files f ON f.file_id = "
                        f"p.child_id WHERE p.parent_id IN ({', '.join('?' * len(parent_ids))}) "
                        "AND f.data_tier = ? ORDER BY f.file_name",
                        [*parent_ids, exclusive_tier],
                    )
                ]
                if others:
                    raise already_merged_error(name, others)
            file_id = self._insert(db, md, parent_ids)
        self.forget(name)
        return DeclareResult(name, DECLARED, file_id)

    def _insert(self, db, md: dict, parent_ids: list[int]) -> int:
        columns = {"file_name": md["file_name"], "create_date": now_iso()}
        for field, column in COLUMNS.items():
            if field in md:
                columns[column] = md[field]
        for field, column in APPLICATION_COLUMNS.items():
            if "application" in md:
                columns[column] = md["application"][field]
        params = {
            key: value
            for key, value in md.items()
            if key not in COLUMNS and key not in SEPARATE_FIELDS
        }
        columns["params"] = json.dumps(params, sort_keys=True)
        cursor = db.execute(
            f"INSERT INTO files ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            list(columns.values()),
        )
        file_id = cursor.lastrowid
        for text in md.get("checksum", []):
            algorithm, _, value = text.partition(":")
            db.execute(
                "INSERT INTO checksums (file_id, algorithm, value) VALUES (?, ?, ?)",
                (file_id, algorithm, value),
            )
        db.executemany(
            "INSERT INTO runs (file_id, position, run_number, subrun, run_type) VALUES (?, ?, ?, "
            "?, ?)",
            [(file_id, position, *run) for position, run in enumerate(md.get("runs", []))],
        )
        db.executemany(
            "INSERT INTO parents (child_id, parent_id, position) VALUES (?, ?, ?)",
            [(file_id, parent_id, position) for position, parent_id in enumerate(parent_ids)],
        )
        return file_id
