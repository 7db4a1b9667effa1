"""Issue 9, findings 6 and 7: a declaration is confirmed, and "not merged twice" is race-free.

- Finding 6: SAM web's answer to ``POST /files`` counts as a declaration only when it carries
  a file id (or is a 409 whose record matches); a proxy's or login page's ``200 <html>`` is a
  catalogue error (exit 8), the verified output stays and no input is retired.
- Finding 7: two declaring merges of the same inputs started together declare once.  In the
  sqlite catalogue the check and the declaration are one ``BEGIN IMMEDIATE`` transaction; SAM
  web has no transactions, so the check is repeated just before the POST and the lineage read
  after it, and a conflict found then is reported (exit 8).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from catalog_contract import raw, unmerged
from samweb_server import SamWebServer
from test_merge_catalog import catalog_import, status

from bindings.catalog import DECLARED, open_catalog
from engine.errors import AlreadyMerged, CatalogError, EngineError
from engine.metadata import sidecar_path
from engine.verify import verify_file

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "retries": 1, "backoff": 0.0}
INPUTS = [unmerged(n)["file_name"] for n in (1, 2, 3)]


def merged(name: str) -> dict:
    return {
        "file_name": name,
        "file_size": 4000,
        "checksum": ["adler32:0000abcd"],
        "data_tier": "thumbnail",
        "runs": [[178000, 0, "physics"]],
        "parents": [{"file_name": n} for n in INPUTS],
    }


def fill(catalog) -> None:
    for n in (1, 2, 3):
        catalog.declare(raw(n))
        catalog.declare(unmerged(n))


@pytest.fixture
def server():
    with SamWebServer("dzero") as running:
        yield running


# --- finding 6: a declaration is confirmed by a file id -------------------------------------


@pytest.mark.parametrize(
    "status, content_type, body",
    [
        (200, "text/html", "<html><body>Please log in</body></html>"),
        (200, "text/plain", ""),
        (201, "application/json", '{"status": "ok"}'),
        (204, "text/plain", ""),
    ],
)
def test_a_2xx_without_a_file_id_is_not_a_declaration(server, status, content_type, body):
    with open_catalog(server.url, **FAST) as catalog:
        catalog.declare(raw())
        server.answer_next(1, status, body, content_type)
        with pytest.raises(CatalogError) as caught:
            catalog.declare(raw(4))
    assert type(caught.value) is CatalogError and caught.value.exit_code == 8
    assert str(caught.value).startswith(
        f"{raw(4)['file_name']}: samweb: the declaration is not confirmed: "
        f"POST /files answered HTTP {status} ({content_type}) without a file id"
    )


@pytest.mark.parametrize("body", ["17\n", '{"file_id": 17}', "17"])
def test_a_file_id_in_the_answer_confirms_it(server, body):
    with open_catalog(server.url, **FAST) as catalog:
        server.answer_next(1, 200, body, "text/plain")
        assert catalog.declare(raw()) == (raw()["file_name"], DECLARED, 17)


class HtmlDeclarationsServer(SamWebServer):
    """A SAM web server behind a proxy that answers declarations with a login page."""

    login_page = False

    def handle(self, method, raw_path, headers, body):
        if method == "POST" and raw_path.endswith("/files") and self.login_page:
            self.requests.append((method, raw_path, headers))
            return (
                200,
                "text/html; charset=utf-8",
                "<html><head><title>Sign in</title></head></html>",
            )
        return super().handle(method, raw_path, headers, body)


def test_merge_run_keeps_the_output_and_retires_nothing_after_a_login_page(
    cli, tmb_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("TMBMERGE_SAMWEB_RETRIES", "0")
    with HtmlDeclarationsServer("dzero") as sam:
        folder = tmb_run[0].parent
        catalog_import(cli, sam, folder)
        sam.login_page = True
        out, retired = tmp_path / "out", tmp_path / "retired"
        result = cli(
            "merge-run",
            folder,
            "--out-dir",
            out,
            "--catalog",
            sam.url,
            "--declare",
            "--retire-inputs",
            "--retire-dir",
            retired,
            "--json",
        )
        assert result.code == 8, result.err
        [output] = result.json()["outputs"]
        assert output["declared"] == "failed" and output["retired"] == []
        assert "the declaration is not confirmed" in output["declare_error"]["message"]
        path = Path(output["output"])
        assert verify_file(path, metadata="auto").ok and sidecar_path(path).is_file()
        assert [e["state"] for e in status(cli, out)["outputs"]] == ["verified"]
        assert all(p.is_file() for p in tmb_run) and not retired.exists()
        assert not any(md.get("data_tier") == "thumbnail" for md in sam.store.values())


# --- finding 7: not merged twice, race-free -------------------------------------------------


def _declare_after_checking(url: str, name: str, barrier, results) -> None:
    """One process: check the inputs are not merged, wait for the other, then declare."""
    try:
        with open_catalog(url) as catalog:
            assert catalog.exclusive_conflicts(merged(name), "thumbnail") == []
            barrier.wait(timeout=30)
            outcome = catalog.declare(merged(name), exclusive_tier="thumbnail").status
    except EngineError as exc:
        outcome = exc.kind
    results.put((name, outcome))


def test_two_processes_checked_then_declaring_declare_once_sqlite(tmp_path):
    url = f"sqlite://{tmp_path}/catalog.db"
    with open_catalog(url) as catalog:
        fill(catalog)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    names = ["tmb_a_mrg.tmb", "tmb_b_mrg.tmb"]
    workers = [
        context.Process(target=_declare_after_checking, args=(url, n, barrier, results))
        for n in names
    ]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(outcomes.values()) == ["AlreadyMerged", DECLARED]
    with open_catalog(url) as catalog:
        assert catalog.files(data_tier="thumbnail") == [n for n in names if outcomes[n] == DECLARED]


def test_samweb_checks_just_before_the_post(server):
    with open_catalog(server.url, **FAST) as catalog:
        fill(catalog)
        catalog.declare(merged("first.tmb"))
        before = len(server.requests)
        with pytest.raises(AlreadyMerged) as caught:
            catalog.declare(merged("second.tmb"), exclusive_tier="thumbnail")
    assert (
        str(caught.value)
        == "second.tmb: not declared: its inputs are merged already into first.tmb"
    )
    assert caught.value.exit_code == 8
    assert not [r for r in server.requests[before:] if r[0] == "POST" and r[1].endswith("/files")]
    assert "second.tmb" not in server.store


def test_samweb_reads_the_lineage_after_the_post(server):
    # another merge of the same inputs declares between our check and our POST
    with open_catalog(server.url, **FAST) as catalog:
        fill(catalog)
        server.before_declare = lambda md: (
            md["file_name"] == "second.tmb" and server.put(merged("first.tmb"))
        )
        with pytest.raises(AlreadyMerged) as caught:
            catalog.declare(merged("second.tmb"), exclusive_tier="thumbnail")
    assert str(caught.value).startswith(
        "second.tmb: declared, but its inputs were declared merged into first.tmb at the same time"
    )
    assert caught.value.exit_code == 8


def test_a_redeclaration_of_the_same_output_is_no_conflict(server, tmp_path):
    for url in (server.url, f"sqlite://{tmp_path}/catalog.db"):
        with open_catalog(url) as catalog:
            fill(catalog)
            first = catalog.declare(merged("first.tmb"), exclusive_tier="thumbnail")
            again = catalog.declare(merged("first.tmb"), exclusive_tier="thumbnail")
            assert (first.status, again.status) == (DECLARED, "already declared")


def test_two_merges_of_the_same_inputs_started_together_declare_once(tmb_big_run, tmp_path, cli):
    # ~25 MB of inputs: each merge lasts long enough for both to pass the check made at their start
    url = f"sqlite://{tmp_path}/catalog.db"
    inputs = sorted(tmb_big_run.glob("*.tmb"))
    result = cli("catalog", "import", tmb_big_run, "--declare-parents", "--catalog", url)
    assert result.code == 0, result.err
    outputs = [
        tmp_path / "a" / "tmb_0000178100_mrg_p000-p011.tmb",
        tmp_path / "b" / "tmb_0000178100_p000-p011.tmb",
    ]
    commands = []
    for output in outputs:
        output.parent.mkdir()
        commands.append(
            [
                sys.executable,
                "-m",
                "bindings.cli",
                "merge",
                *map(str, inputs),
                "-o",
                str(output),
                "--catalog",
                url,
                "--declare",
                "--json",
                "--quiet",
            ]
        )
    processes = [
        subprocess.Popen(
            c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        for c in commands
    ]
    finished = [p.communicate(timeout=120) + (p.returncode,) for p in processes]
    assert sorted(code for _, _, code in finished) == [0, 8], finished
    with open_catalog(url) as catalog:
        thumbnails = catalog.files(data_tier="thumbnail")
        assert len(thumbnails) == 1
        assert catalog.children(inputs[0].name) == thumbnails
    for output, (stdout, stderr, code) in zip(outputs, finished, strict=True):
        if code == 0:
            assert json.loads(stdout)["declared"] == DECLARED and output.name in thumbnails
        elif "its inputs are merged already into" in stderr:  # the race: refused at its declaration
            assert (
                output.is_file() and verify_file(output, metadata="auto").ok
            )  # verified output kept
        else:  # the other had declared before it began
            assert "already merged into" in stderr and not output.exists()
    assert all(p.is_file() for p in inputs)
