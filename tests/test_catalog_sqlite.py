"""The embedded SQLite catalogue: the shared contract, URL forms, schema, transactions,
processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys
from pathlib import Path

import pytest
from catalog_contract import CatalogContract, raw, unmerged

from bindings.catalog import ALREADY_DECLARED, DECLARED, open_catalog
from bindings.catalog.sqlite import SCHEMA_VERSION, SqliteCatalog, path_from_url
from engine import plugins
from engine.catalog import backend_class
from engine.errors import CatalogError, DeclarationConflict, EngineError, UsageError

ROOT = Path(__file__).resolve().parent.parent


class TestSqliteCatalog(CatalogContract):
    @pytest.fixture
    def catalog(self, tmp_path):
        with open_catalog(f"sqlite://{tmp_path}/catalog.db") as catalog:
            yield catalog


# --- URLs and the registry ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, path",
    [
        ("sqlite:///data/catalog.db", "/data/catalog.db"),
        ("sqlite://localhost/data/catalog.db", "/data/catalog.db"),
        ("sqlite:/data/catalog.db", "/data/catalog.db"),
        ("sqlite:catalog.db", "catalog.db"),
        ("sqlite:sub/catalog%20v2.db", "sub/catalog v2.db"),
    ],
)
def test_url_forms(url, path):
    assert path_from_url(url) == Path(path)


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_from_url("sqlite:~/c.db") == tmp_path / "c.db"


@pytest.mark.parametrize("url", ["sqlite://otherhost/c.db", "sqlite:", "sqlite://"])
def test_bad_sqlite_urls(url):
    with pytest.raises(UsageError):
        open_catalog(url)


def test_relative_url_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_catalog("sqlite:rel.db") as catalog:
        catalog.declare(raw())
    assert (tmp_path / "rel.db").is_file()


@pytest.mark.parametrize(
    "url, words",
    [("nocolon", "not a catalogue URL"), ("ftp://x/y", "unknown catalogue scheme 'ftp'")],
)
def test_open_catalog_refuses_unknown_urls(url, words):
    with pytest.raises(UsageError, match=words) as caught:
        open_catalog(url)
    assert caught.value.exit_code == 2


def test_the_built_in_schemes_are_pyprojects_entry_points():
    """One registry: the schemes tmbmerge's pyproject.toml declares are what the engine's registry
    serves (no table copied beside them), each loading the class it names."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    builtin = project["entry-points"][plugins.CATALOGS]
    targets = plugins.targets(plugins.CATALOGS)
    for scheme, target in builtin.items():
        assert targets[scheme] == target
        assert backend_class(scheme).__name__ == target.rsplit(":", 1)[1]


def _install_plugin(
    directory: Path, monkeypatch, group: str, name: str, target: str, module_text: str
) -> None:
    """A distribution installed only on sys.path: a module and a .dist-info declaring one entry
    point."""
    module = target.split(":")[0]
    (directory / f"{module}.py").write_text(module_text)
    info = directory / "tmbmerge_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tmbmerge-test-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_a_backend_plugs_in_through_an_entry_point(tmp_path, monkeypatch):
    _install_plugin(
        tmp_path,
        monkeypatch,
        "tmbmerge.catalogs",
        "memo",
        "memo_catalog:MemoCatalog",
        "from bindings.catalog.sqlite import SqliteCatalog\n"
        "class MemoCatalog(SqliteCatalog):\n"
        "    @classmethod\n"
        "    def from_url(cls, url, **options):\n"
        "        return cls(url.partition(':')[2] + '.db', url=url)\n",
    )
    monkeypatch.chdir(tmp_path)
    with open_catalog("memo:plugged") as catalog:
        assert type(catalog).__name__ == "MemoCatalog"
        assert catalog.declare(raw()).status == DECLARED
    assert (tmp_path / "plugged.db").is_file()


def test_an_entry_point_that_is_not_a_catalog_is_refused(tmp_path, monkeypatch):
    _install_plugin(
        tmp_path, monkeypatch, "tmbmerge.catalogs", "odd", "odd_catalog:thing", "thing = 42\n"
    )
    with pytest.raises(UsageError, match="odd_catalog:thing, which is not a Catalog"):
        open_catalog("odd:x")


# --- schema and storage ---------------------------------------------------------------------


def test_schema_tables_indexes_and_pragmas(tmp_path):
    with open_catalog(f"sqlite://{tmp_path}/c.db") as catalog:
        catalog.declare(raw())
    db = sqlite3.connect(tmp_path / "c.db")
    names = {
        name
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
    }
    assert {
        "files",
        "checksums",
        "runs",
        "parents",
        "files_by_tier",
        "runs_by_run",
        "parents_by_parent",
    } <= names
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    plan = " ".join(
        row[3]
        for row in db.execute("EXPLAIN QUERY PLAN SELECT file_id FROM runs WHERE run_number = 5")
    )
    assert "runs_by_run" in plan
    plan = " ".join(
        row[3]
        for row in db.execute("EXPLAIN QUERY PLAN SELECT child_id FROM parents WHERE parent_id = 5")
    )
    assert "parents_by_parent" in plan
    db.close()


def test_records_survive_reopening_and_params_are_json(tmp_path):
    url = f"sqlite://{tmp_path}/c.db"
    with open_catalog(url) as catalog:
        catalog.declare(raw())
        catalog.declare(unmerged(**{"Merge.skipped": [{"file_name": "x", "reason": "y"}]}))
    with open_catalog(url) as catalog:
        record = catalog.get("tmb_0000178000_p003.tmb")
    assert record["Merge.skipped"] == [{"file_name": "x", "reason": "y"}]
    db = sqlite3.connect(tmp_path / "c.db")
    (params,) = db.execute(
        "SELECT params FROM files WHERE file_name = 'tmb_0000178000_p003.tmb'"
    ).fetchone()
    assert params == '{"Merge.skipped": [{"file_name": "x", "reason": "y"}]}'
    db.close()


def test_create_date_is_assigned_by_the_catalogue(tmp_path):
    with open_catalog(f"sqlite://{tmp_path}/c.db") as catalog:
        catalog.declare(dict(raw(), create_date="1999-01-01T00:00:00+00:00", file_id=77))
        record = catalog.get(raw()["file_name"])
    assert record["file_id"] == 1
    assert not record["create_date"].startswith("1999")


def test_a_failed_declaration_leaves_nothing_behind(tmp_path):
    class FailingAfterInsert(SqliteCatalog):
        def _insert(self, db, md, parent_ids):
            super()._insert(db, md, parent_ids)
            raise RuntimeError("crash after the inserts")

    failing = FailingAfterInsert(tmp_path / "c.db")
    with pytest.raises(RuntimeError):
        failing.declare(raw())
    failing.close()
    db = sqlite3.connect(tmp_path / "c.db")
    counts = [
        db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("files", "checksums", "runs", "parents")
    ]
    db.close()
    assert counts == [0, 0, 0, 0]
    with SqliteCatalog(tmp_path / "c.db") as catalog:
        assert catalog.declare(raw()).status == DECLARED


def test_not_a_catalogue(tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="not a tmbmerge catalogue"):
        open_catalog(f"sqlite://{other}")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(
        CatalogError, match="garbage.db: catalogue database error: file is not a database"
    ):
        open_catalog(f"sqlite://{garbage}")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.db"
    SqliteCatalog(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CatalogError, match="newer than this tmbmerge reads"):
        SqliteCatalog(path)


def test_unopenable_path(tmp_path):
    with pytest.raises(CatalogError, match="cannot open the catalogue"):
        open_catalog(f"sqlite://{tmp_path}/no/such/dir/c.db")


# --- several processes at once --------------------------------------------------------------

WORKERS = 6


def _declare_concurrently(path: str, index: int, barrier, results) -> None:
    """One process: open the catalogue, wait for all, then declare shared and own files."""
    outcomes = []
    with SqliteCatalog(path, busy_timeout=30) as catalog:
        barrier.wait()
        for md in (
            raw(),
            unmerged(3),
            unmerged(100 + index, parents=[{"file_name": raw()["file_name"]}]),
            dict(raw(9), file_size=1000 + index),
        ):
            try:
                result = catalog.declare(md)
                outcomes.append((md["file_name"], result.status, result.file_id))
            except DeclarationConflict as exc:
                outcomes.append((md["file_name"], "conflict", str(exc)))
            except EngineError as exc:  # anything else is a failure of the test, reported
                outcomes.append((md["file_name"], exc.kind, str(exc)))
    results.put(outcomes)


def test_processes_declaring_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    path = str(tmp_path / "shared.db")
    workers = [
        context.Process(target=_declare_concurrently, args=(path, i, barrier, results))
        for i in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = [entry for _ in workers for entry in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    by_name: dict[str, list] = {}
    for name, status, detail in outcomes:
        by_name.setdefault(name, []).append((status, detail))
    for shared in (raw()["file_name"], unmerged(3)["file_name"]):
        statuses = sorted(status for status, _ in by_name[shared])
        assert statuses == [ALREADY_DECLARED] * (WORKERS - 1) + [DECLARED]
        assert len({file_id for _, file_id in by_name[shared]}) == 1
    for index in range(WORKERS):
        assert [status for status, _ in by_name[unmerged(100 + index)["file_name"]]] == [DECLARED]
    contested = sorted(status for status, _ in by_name[raw(9)["file_name"]])
    assert contested == ["conflict"] * (WORKERS - 1) + [DECLARED]

    with SqliteCatalog(path) as catalog:
        assert len(catalog.files()) == 2 + 1 + WORKERS
        assert len(catalog.children(raw()["file_name"])) == 1 + WORKERS
        winner = catalog.get(raw(9)["file_name"])["file_size"]
    assert 1000 <= winner < 1000 + WORKERS
