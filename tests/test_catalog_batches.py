"""Issue 16: batched catalogue look-ups, the per-command cache, the request budget and the total
deadline.

Against tests/samweb_server.py (which counts every request) and the sqlite catalogue.  The
batched SAM web calls are those of SAM's own client (docs/CATALOG.md, "samweb+https:"):
``POST /files/metadata`` with ``file_name`` repeated, and ``GET /files/list?dims=...`` with
``ischildof:`` dimensions.  Faults as for single calls: a hang, 5xx, a body that is not what
was asked, a dropped connection.
"""

from __future__ import annotations

import pytest
from catalog_contract import raw, unmerged
from samweb_server import SamWebServer
from test_merge_catalog import catalog_import

from bindings.catalog import open_catalog
from bindings.catalog.base import BATCH_SIZE
from engine.errors import CatalogError, CatalogUnavailable, UsageError

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 2, "backoff": 0.0}
COUNT = 2 * BATCH_SIZE + 5


@pytest.fixture
def server():
    with SamWebServer("dzero") as running:
        for n in range(COUNT):
            running.put(raw(n))
            running.put(unmerged(n))
        yield running


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite://{tmp_path}/catalog.db"
    with open_catalog(url) as catalog:
        for n in range(COUNT):
            catalog.declare(raw(n))
            catalog.declare(unmerged(n))
    return url


def names(count: int = COUNT) -> list[str]:
    return [unmerged(n)["file_name"] for n in range(count)]


def test_records_come_a_batch_per_request_then_from_the_cache(server):
    with open_catalog(server.url, **FAST) as catalog:
        found = catalog.records(names() + ["nothing.tmb"])
        assert sorted(found) == sorted(names())
        assert found[names()[7]]["file_size"] == unmerged(7)["file_size"]
        assert [(m, p.split("?")[0]) for m, p, _ in server.requests] == [
            ("POST", "/sam/dzero/api/files/metadata")
        ] * 3
        assert catalog.records(names()[:10]) == {n: found[n] for n in names()[:10]}
        assert len(server.requests) == 3  # the cache answered
        assert catalog.budget.requests == 3 and catalog.budget.seconds > 0


def test_children_of_many_files_in_one_query_per_batch(server):
    server.put(
        {
            "file_name": "merged.tmb",
            "file_size": 9,
            "data_tier": "thumbnail",
            "parents": [{"file_name": n} for n in names(3)],
        }
    )
    with open_catalog(server.url, **FAST) as catalog:
        children = catalog.children_of(names(), data_tier="thumbnail")
        assert children == {n: (["merged.tmb"] if n in names(3) else []) for n in names()}
        dims = [p for m, p, _ in server.requests if p.split("?")[0].endswith("/files/list")]
        assert len(dims) == 3 and "ischildof" in dims[0]
        assert len(server.requests) == 4  # and the one child's record
        raws = catalog.children_of([raw(1)["file_name"]])
        assert raws == {raw(1)["file_name"]: [unmerged(1)["file_name"]]}


def test_sqlite_batches_agree_with_single_look_ups(sqlite_url):
    with open_catalog(sqlite_url) as catalog:
        catalog.declare(
            {
                "file_name": "merged.tmb",
                "file_size": 9,
                "data_tier": "thumbnail",
                "parents": [{"file_name": n} for n in names(3)],
            }
        )
        before = catalog.budget.requests
        found = catalog.records(names() + ["nothing.tmb"])
        assert catalog.budget.requests - before == 3  # a transaction per batch of 100
        for n in (names()[0], names()[-1]):
            assert found[n] == catalog.get(n)
        assert catalog.children_of(names(4), data_tier="thumbnail") == {
            n: (["merged.tmb"] if n in names(3) else []) for n in names(4)
        }
        assert catalog.children_of([raw(2)["file_name"]]) == {
            raw(2)["file_name"]: [unmerged(2)["file_name"]]
        }


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_a_batch_call_is_retried_after_a_5xx_or_a_dropped_connection(server, fault):
    with open_catalog(server.url, **FAST) as catalog:
        server.fail_next(1, status=503) if fault == "503" else server.drop_next(1)
        assert len(catalog.records(names(5))) == 5
    assert len(server.requests) == 2


@pytest.mark.parametrize("body", ["<html>login</html>", '{"file_name": "x"}', '[{"no_name": 1}]'])
def test_a_batch_answer_that_is_not_a_list_of_records_is_an_error(server, body):
    with open_catalog(server.url, **FAST) as catalog:
        server.answer_next(
            1, 200, body, "text/html" if body.startswith("<") else "application/json"
        )
        with pytest.raises(CatalogError, match="POST /files/metadata"):
            catalog.records(names(5))


def test_a_hanging_catalogue_costs_the_deadline_not_hours(server):
    # every request hangs longer than its timeout; retries go on until the total deadline
    with open_catalog(
        server.url, connect_timeout=0.3, read_timeout=0.3, retries=50, backoff=0.05, deadline=1.5
    ) as catalog:
        server.delay_next(100, 1.0)
        with pytest.raises(CatalogUnavailable) as caught:
            catalog.records(names(5))
        attempts = catalog.budget.requests
    # stopped by the deadline, long before the 51 attempts the retries would allow
    assert 1 < attempts < 20 and len(server.requests) == attempts
    assert f"failed {attempts} times (the catalogue deadline is spent)" in str(caught.value)
    assert caught.value.exit_code == 8
    with pytest.raises(CatalogUnavailable, match="catalogue deadline of 1.5 s spent"):
        catalog.records(names(10))  # no more requests once it is spent


def test_the_deadline_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TMBMERGE_CATALOG_DEADLINE", "42")
    with open_catalog(f"sqlite://{tmp_path}/c.db") as catalog:
        assert catalog.budget.deadline == 42.0
    monkeypatch.setenv("TMBMERGE_CATALOG_DEADLINE", "soon")
    with pytest.raises(UsageError, match="TMBMERGE_CATALOG_DEADLINE"):
        open_catalog(f"sqlite://{tmp_path}/c.db")


# --- through merge-run --------------------------------------------------------------------


def test_merge_run_reports_its_budget_and_asks_per_batch_not_per_input(
    cli, tmb_run, tmp_path, monkeypatch
):
    for name in (
        "TMBMERGE_SAMWEB_RETRIES",
        "TMBMERGE_SAMWEB_TOKEN",
        "BEARER_TOKEN",
        "BEARER_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    with SamWebServer("dzero") as sam:
        catalog_import(cli, sam, tmb_run[0].parent)
        sam.requests.clear()
        result = cli(
            "merge-run",
            tmb_run[0].parent,
            "--out-dir",
            tmp_path / "out",
            "--catalog",
            sam.url,
            "--declare",
            "--json",
        )
        assert result.code == 0, result.err
        report = result.json()
        kinds = sorted({(m, p.split("?")[0].rsplit("/api", 1)[1]) for m, p, _ in sam.requests})
        count = len(sam.requests)
    # 6 inputs, 1 output: records (1), merged children (1), check before (1), POST (1),
    # lineage after (1)
    assert count == 5
    assert kinds == [("GET", "/files/list"), ("POST", "/files"), ("POST", "/files/metadata")]
    assert report["catalog"]["requests"] == count
    assert report["catalog"]["seconds_waiting"] > 0 and report["catalog"]["deadline"] == 900


def test_grandparents_are_declared_as_the_outputs_parents(cli, tmb_run, tmp_path):
    url = f"sqlite://{tmp_path}/catalog.db"
    catalog_import(cli, type("Backend", (), {"url": url}), tmb_run[0].parent)
    result = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--catalog",
        url,
        "--declare",
        "--grandparents",
        "--json",
    )
    assert result.code == 0, result.err
    [output] = result.json()["outputs"]
    with open_catalog(url) as catalog:
        name = output["output"].rsplit("/", 1)[1]
        grandparents = [catalog.parents(p.name)[0] for p in tmb_run]
        assert catalog.parents(name) == grandparents
        assert all(n.endswith(".raw") for n in grandparents)
    refused = cli("merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "o2", "--grandparents")
    assert refused.code == 2 and "--grandparents" in refused.err
