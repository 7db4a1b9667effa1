"""The campaign service's JSON API, against a real ``tmbmerge serve`` process on 127.0.0.1.

One campaign (the ``campaign`` fixture, ``campaign_helpers.build_campaign``: real ``merge-run``s, a
damaged run, real ``certify``) and one server (``campaign_server``) are shared with the browser
test; tests that change datasets define their own.  What is covered (the issue's "Done means"):

1. 50 concurrent claims of one dataset by 50 sites: exactly one winner, 49 refusals (409),
   and the database holds one assignment and one history row.
2. The state machine: every state in order with who and when, illegal transitions (skips,
   backwards, unknown states) refused, release only before copying.
3. Who may do what: no token / unknown token 401, another site's dataset 403, reads open;
   ``serve token add`` prints the token on its last line and only its hash is stored.
4. Bad input: 4xx with a JSON error for malformed bodies, unknown datasets, bad run numbers,
   big bodies; never a 500.
5. Monitoring figures equal what the catalogue and the journals hold after the real merge-runs,
   including the produced != expected flag and the missing partition.
6. Certification: merged identical to unmerged; a reference run compared with a p-value; PNGs.
7. Recovery: the failed output of the damaged run is listed (API and page alike) with a
   command; executed after the input is repaired, it resumes the run.  An input a robust merge
   skipped as bad is listed with its reason; its commands, run after the repair, merge it.
"""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from campaign_helpers import (
    DAMAGED_RUN,
    GOOD_RUN,
    MISSING_PARTITION,
    RAW_EVENT_SURPLUS_PARTITION,
    REFERENCE_RUN,
    CampaignServer,
    cli_env,
    cli_subprocess,
)

STATES = ["assigned", "copied-to-site", "processed", "merged", "declared", "copied-back"]


@pytest.fixture
def server(campaign_server):
    return campaign_server


@pytest.fixture(scope="session")
def store(campaign):
    from bindings.serve.store import CampaignStore

    return CampaignStore(campaign.catalog)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


_names = iter(range(10**6))


@pytest.fixture
def dataset(store):
    """A fresh dataset of the good run's range, and a token of a site of its own."""
    n = next(_names)
    name = f"ds-{n}"
    store.add_dataset(name, runs=(GOOD_RUN, GOOD_RUN + 1))
    return name, store.add_token(f"site-{n}")


# 1 -------------------------------------------------------------------------------------------
def test_fifty_concurrent_claims_have_exactly_one_winner(server, store, campaign, dataset):
    name, _ = dataset
    tokens = [store.add_token(f"racer-{i}") for i in range(50)]
    url = f"{server.url}/api/datasets/{name}/claim"

    def claim(token):
        response = requests.post(url, headers=bearer(token), json={"note": "race"}, timeout=60)
        return response.status_code, response.json()

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(claim, tokens))
    codes = sorted(code for code, _ in results)
    assert codes == [201] + [409] * 49
    winner = next(body["dataset"]["site"] for code, body in results if code == 201)
    assert all("assigned to " + winner in body["error"] for code, body in results if code == 409)
    with sqlite3.connect(campaign.folder / "campaign.db") as db:
        assert db.execute(
            "SELECT site FROM campaign_assignments WHERE dataset = ?", (name,)
        ).fetchall() == [(winner,)]
        assert (
            db.execute(
                "SELECT COUNT(*) FROM campaign_history WHERE dataset = ?", (name,)
            ).fetchone()[0]
            == 1
        )
    assert requests.get(f"{server.url}/api/datasets/{name}", timeout=30).json()["site"] == winner


def test_the_holder_claiming_again_is_told_it_holds_it(server, dataset):
    name, token = dataset
    first = requests.post(
        f"{server.url}/api/datasets/{name}/claim", headers=bearer(token), timeout=30
    )
    again = requests.post(
        f"{server.url}/api/datasets/{name}/claim", headers=bearer(token), timeout=30
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert (first.json()["claimed"], again.json()["claimed"]) == (True, False)


# 2 -------------------------------------------------------------------------------------------
def test_a_dataset_walks_the_plan_states_with_history(server, dataset):
    name, token = dataset
    base = f"{server.url}/api/datasets/{name}"
    assert requests.post(base + "/claim", headers=bearer(token), timeout=30).status_code == 201
    for state in STATES[1:]:
        response = requests.post(
            base + "/status",
            headers=bearer(token),
            json={"state": state, "note": f"to {state}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["state"] == state
    described = requests.get(base, timeout=30).json()
    assert described["state"] == "copied-back" and described["next_states"] == []
    history = described["history"]
    assert [(h["from"], h["to"]) for h in history] == list(
        zip([None] + STATES[:-1], STATES, strict=True)
    )
    assert all(h["site"] == described["site"] and h["at"] for h in history)
    assert history[-1]["note"] == "to copied-back"
    final = requests.post(
        base + "/status", headers=bearer(token), json={"state": "assigned"}, timeout=30
    )
    assert final.status_code == 409 and "cannot go from copied-back" in final.json()["error"]


@pytest.mark.parametrize(
    "state, status, message",
    [
        ("processed", 409, "cannot go from assigned to processed"),  # a skip
        ("assigned", 409, "cannot go from assigned to assigned"),
        ("done", 400, "unknown state"),
    ],
)
def test_illegal_transitions_are_refused(server, dataset, state, status, message):
    name, token = dataset
    base = f"{server.url}/api/datasets/{name}"
    requests.post(base + "/claim", headers=bearer(token), timeout=30)
    response = requests.post(
        base + "/status", headers=bearer(token), json={"state": state}, timeout=30
    )
    assert response.status_code == status and message in response.json()["error"]
    assert requests.get(base, timeout=30).json()["state"] == "assigned"


def test_a_status_change_before_any_claim_is_refused(server, dataset):
    name, token = dataset
    response = requests.post(
        f"{server.url}/api/datasets/{name}/status",
        headers=bearer(token),
        json={"state": "copied-to-site"},
        timeout=30,
    )
    assert response.status_code == 409 and "not assigned" in response.json()["error"]


def test_release_gives_the_dataset_back_only_before_copying(server, store, dataset):
    name, token = dataset
    base = f"{server.url}/api/datasets/{name}"
    requests.post(base + "/claim", headers=bearer(token), timeout=30)
    released = requests.post(
        base + "/status", headers=bearer(token), json={"state": "released"}, timeout=30
    )
    assert released.status_code == 200 and released.json()["state"] == "open"
    other = store.add_token("second-taker")
    assert (
        requests.post(base + "/claim", headers=bearer(other), timeout=30).json()["dataset"]["site"]
        == "second-taker"
    )
    requests.post(
        base + "/status", headers=bearer(other), json={"state": "copied-to-site"}, timeout=30
    )
    late = requests.post(
        base + "/status", headers=bearer(other), json={"state": "released"}, timeout=30
    )
    assert late.status_code == 409


# 3 -------------------------------------------------------------------------------------------
def test_writes_need_a_known_token(server, dataset):
    name, _ = dataset
    url = f"{server.url}/api/datasets/{name}/claim"
    for headers in (
        {},
        {"Authorization": "Bearer tmbs_not-a-token"},
        {"Authorization": "Basic abc"},
    ):
        response = requests.post(url, headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["kind"] == "Unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    add = requests.post(f"{server.url}/api/datasets", json={"name": "x", "runs": "1-2"}, timeout=30)
    assert add.status_code == 401
    assert requests.get(f"{server.url}/api/datasets/{name}", timeout=30).json()["state"] == "open"


def test_a_site_cannot_change_another_sites_dataset(server, store, dataset):
    name, owner = dataset
    base = f"{server.url}/api/datasets/{name}"
    requests.post(base + "/claim", headers=bearer(owner), timeout=30)
    intruder = store.add_token("intruder")
    response = requests.post(
        base + "/status", headers=bearer(intruder), json={"state": "copied-to-site"}, timeout=30
    )
    assert response.status_code == 403 and "not to intruder" in response.json()["error"]
    assert requests.post(base + "/claim", headers=bearer(intruder), timeout=30).status_code == 409
    assert requests.get(base, timeout=30).json()["state"] == "assigned"


def test_token_add_prints_the_token_last_and_stores_only_its_hash(server, campaign, dataset):
    name, _ = dataset
    done = cli_subprocess("serve", "token", "add", "gridka", "--catalog", campaign.catalog)
    token = done.stdout.strip().splitlines()[-1]
    assert token.startswith("tmbs_") and len(token) > 40
    with sqlite3.connect(campaign.folder / "campaign.db") as db:
        stored = [
            row[0]
            for row in db.execute("SELECT token_hash FROM campaign_tokens WHERE site = 'gridka'")
        ]
    assert token not in stored and len(stored) == 1 and len(stored[0]) == 64
    claimed = requests.post(
        f"{server.url}/api/datasets/{name}/claim", headers=bearer(token), timeout=30
    )
    assert claimed.status_code == 201 and claimed.json()["dataset"]["site"] == "gridka"


def test_datasets_are_defined_by_cli_and_api(server, campaign, store):
    done = cli_subprocess(
        "serve",
        "dataset",
        "add",
        "cli-made",
        "--runs",
        "178000-178003",
        "--catalog",
        campaign.catalog,
    )
    assert "cli-made" in done.stdout
    token = store.add_token("coordinator")
    made = requests.post(
        f"{server.url}/api/datasets",
        headers=bearer(token),
        json={"name": "api-made", "runs": [GOOD_RUN, DAMAGED_RUN]},
        timeout=30,
    )
    assert made.status_code == 201 and made.json()["created_by"] == "coordinator"
    listed = {
        d["name"]: d
        for d in requests.get(f"{server.url}/api/datasets", timeout=30).json()["datasets"]
    }
    assert listed["cli-made"]["runs"] == {"first": 178000, "last": 178003}
    assert listed["api-made"]["runs"] == {"list": [GOOD_RUN, DAMAGED_RUN]}
    again = requests.post(
        f"{server.url}/api/datasets",
        headers=bearer(token),
        json={"name": "api-made", "runs": "1-2"},
        timeout=30,
    )
    assert again.status_code == 409 and "exists already" in again.json()["error"]
    refused = cli_subprocess(
        "serve",
        "dataset",
        "add",
        "bad",
        "--runs",
        "9-3",
        "--catalog",
        campaign.catalog,
        check=False,
    )
    assert (
        refused.returncode == 2
        and "FIRST <= LAST" in refused.stderr
        and "Traceback" not in refused.stderr
    )


# 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/api/datasets/{name}/status", b"{not json", 400),
        ("POST", "/api/datasets/{name}/status", b"[1, 2]", 400),
        ("POST", "/api/datasets/{name}/status", b'{"state": 7}', 400),
        ("POST", "/api/datasets/{name}/status", b'{"state": "copied-to-site", "note": 5}', 400),
        ("POST", "/api/datasets/{name}/claim", b"\xff\xfe", 400),
        ("POST", "/api/datasets/{name}/claim", b"x" * (65 << 10), 413),
        ("POST", "/api/datasets/no-such-dataset/claim", b"", 404),
        ("GET", "/api/datasets/no-such-dataset", None, 404),
        ("GET", "/api/runs/abc", None, 400),
        ("GET", "/api/runs/99999999999999999999999", None, 400),
        ("GET", "/api/runs/-5", None, 400),
        ("GET", "/api/certification/178000?reference=x", None, 400),
        ("GET", "/api/certification/178000?alpha=2", None, 400),
        ("GET", "/api/certification/178000?reference=5", None, 400),
        ("POST", "/api/datasets", b'{"name": "a/b", "runs": "1-2"}', 400),
        ("POST", "/api/datasets", b'{"name": "ok", "runs": "2-1"}', 400),
        ("POST", "/api/datasets", b'{"name": "ok", "runs": [1, "x"]}', 400),
        ("POST", "/api/datasets", b'{"name": "ok", "runs": "1-2", "colour": 1}', 400),
        ("DELETE", "/api/datasets/{name}", None, 405),
        ("GET", "/api/nothing-here", None, 404),
    ],
)
def test_bad_input_gets_a_4xx_json_error(server, dataset, method, path, body, status):
    name, token = dataset
    requests.post(f"{server.url}/api/datasets/{name}/claim", headers=bearer(token), timeout=30)
    response = requests.request(
        method,
        server.url + path.format(name=name),
        data=body,
        timeout=30,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status"] == status and error["error"] and "Traceback" not in response.text


def test_health_answers_without_the_store(server, campaign):
    assert requests.get(f"{server.url}/api/health", timeout=30).json() == {
        "ok": True,
        "catalog": campaign.catalog,
    }


def test_no_request_left_a_traceback_in_the_server_log(server, campaign):
    requests.get(f"{server.url}/api/runs/1", timeout=30)
    assert "Traceback" not in (campaign.folder / "serve.log").read_text()


# 5 -------------------------------------------------------------------------------------------
def test_run_figures_equal_catalogue_and_journal(server, campaign):
    from bindings.catalog import open_catalog
    from engine.generate import raw_parent_name
    from engine.merge.journal import Journal

    figures = requests.get(f"{server.url}/api/runs/{GOOD_RUN}", timeout=30).json()
    with open_catalog(campaign.catalog) as catalog:
        unmerged = catalog.files(run=GOOD_RUN, data_tier="unmerged-thumbnail")
        raw = catalog.files(run=GOOD_RUN, data_tier="raw")
        merged = catalog.files(run=GOOD_RUN, data_tier="thumbnail")
        produced = sum(catalog.get(name)["event_count"] for name in unmerged)
        expected = sum(catalog.get(name)["event_count"] for name in raw)
        merged_events = sum(catalog.get(name)["event_count"] for name in merged)
    with Journal(campaign.merged[GOOD_RUN]) as journal:
        entries = [e for e in journal.entries() if e.run == GOOD_RUN]
    assert len(unmerged) == 6 and len(raw) == 7 and len(entries) >= 2  # sanity of the set-up
    assert figures["raw"] == {
        "files": len(raw),
        "expected_events": expected,
        "without_event_count": 0,
    }
    assert figures["unmerged"]["files"] == len(unmerged)
    assert figures["unmerged"]["produced_events"] == produced
    assert figures["unmerged"]["events_mismatch"] is True and produced != expected
    assert [m["file_name"] for m in figures["unmerged"]["partition_mismatches"]] == [
        f"tmb_{GOOD_RUN:010d}_p{RAW_EVENT_SURPLUS_PARTITION:03d}.tmb"
    ]
    outputs = figures["outputs"]
    assert outputs["planned"] == len(entries)
    assert (
        outputs["declared"]
        == sum(e.state in ("declared", "retired") for e in entries)
        == len(entries)
    )
    assert (
        outputs["merged"] == outputs["verified"] == len(entries)
        and outputs["failed"] == outputs["retired"] == 0
    )
    assert outputs["events"] == sum(e.event_count for e in entries) == produced
    assert (
        outputs["catalogued_merged_files"] == len(merged)
        and outputs["catalogued_merged_events"] == merged_events
    )
    assert {o["output"] for o in figures["journal_outputs"]} == {e.name for e in entries}
    assert figures["failures"] == [] and figures["not_merged"] == [] and figures["skipped"] == []
    assert figures["missing_partitions"] == [
        {
            "partition": MISSING_PARTITION,
            "raw_file": raw_parent_name(GOOD_RUN, MISSING_PARTITION),
            "evidence": f"raw file {raw_parent_name(GOOD_RUN, MISSING_PARTITION)} "
            "has no unmerged file",
        }
    ]


def test_failed_outputs_show_with_their_reason(server, campaign):
    from engine.merge.journal import Journal

    figures = requests.get(f"{server.url}/api/runs/{DAMAGED_RUN}", timeout=30).json()
    with Journal(campaign.merged[DAMAGED_RUN]) as journal:
        failed = [e for e in journal.entries() if e.state == "failed"]
    assert (
        len(failed) == 1
        and figures["outputs"]["failed"] == 1
        and figures["outputs"]["declared"] == 0
    )
    assert figures["failures"] == [
        {
            "output": failed[0].name,
            "folder": str(campaign.merged[DAMAGED_RUN]),
            "state": "failed",
            "reason": failed[0].error,
        }
    ]
    assert campaign.damaged_file.name in failed[0].error


def test_dataset_totals_add_up_its_runs(server, store):
    store.add_dataset("totals", run_list=[GOOD_RUN, REFERENCE_RUN])
    described = requests.get(f"{server.url}/api/datasets/totals", timeout=30).json()
    runs = {s["run"]: s for s in described["run_status"]}
    assert sorted(runs) == [GOOD_RUN, REFERENCE_RUN]
    totals = described["totals"]
    assert totals["produced_events"] == sum(s["unmerged"]["produced_events"] for s in runs.values())
    assert totals["outputs_declared"] == sum(s["outputs"]["declared"] for s in runs.values())
    assert totals["runs_with_event_mismatch"] == [GOOD_RUN]
    assert totals["expected_events"] is None  # the reference run's raw files are known by name only


# 6 -------------------------------------------------------------------------------------------
def test_certification_of_a_merged_run(server):
    result = requests.get(f"{server.url}/api/certification/{GOOD_RUN}", timeout=30).json()
    assert result["status"] == "certified" and result["merge"]["passed"]
    assert result["samples"]["unmerged"]["events"] == result["samples"]["merged"]["events"] == 240
    assert len(result["merge"]["tests"]) == 15 and all(
        t["differing_bins"] == 0 for t in result["merge"]["tests"]
    )


def test_certification_against_a_reference_run(server):
    result = requests.get(
        f"{server.url}/api/certification/{GOOD_RUN}?reference={REFERENCE_RUN}", timeout=30
    ).json()
    reference = result["reference"]
    assert reference["run"] == REFERENCE_RUN and reference["sample"] == "merged"
    assert all(t["test"] == "chi2" and 0 <= t["p_value"] <= 1 for t in reference["tests"])
    assert reference["passed"] == all(t["p_value"] >= 0.01 for t in reference["tests"])
    strict = requests.get(
        f"{server.url}/api/certification/{GOOD_RUN}?reference={REFERENCE_RUN}&alpha=0.999",
        timeout=30,
    ).json()
    assert strict["status"] == "failed" and not strict["reference"]["passed"]


def test_certification_images(server):
    for path in (
        f"/runs/{GOOD_RUN}/merge.png",
        f"/runs/{GOOD_RUN}/reference.png?reference={REFERENCE_RUN}",
    ):
        response = requests.get(server.url + path, timeout=60)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(b"\x89PNG") and len(response.content) > 20_000
    missing = requests.get(f"{server.url}/runs/{DAMAGED_RUN}/merge.png", timeout=30)
    assert (
        missing.status_code == 400
        and "no unmerged and merged histograms" in missing.json()["error"]
    )


def test_pages_render(server, dataset):
    name, _ = dataset
    for path, text in (
        ("/", name),
        (f"/datasets/{name}", "Totals"),
        (f"/runs/{GOOD_RUN}", "certified"),
        ("/recovery", "output-failed"),
    ):
        response = requests.get(server.url + path, timeout=60)
        assert response.status_code == 200 and text in response.text
    assert requests.get(server.url + "/datasets/none-such", timeout=30).status_code == 404


# 7 -------------------------------------------------------------------------------------------
def test_recovery_lists_what_is_missing_or_failed(server, campaign):
    items = requests.get(f"{server.url}/api/recovery", timeout=30).json()["items"]
    kinds = {(item["run"], item["kind"]) for item in items}
    assert (DAMAGED_RUN, "output-failed") in kinds
    assert (GOOD_RUN, "missing-partition") in kinds
    page = requests.get(f"{server.url}/recovery", timeout=30).text
    import html

    for item in items:
        assert html.escape(item["command"], quote=False) in page


def test_executing_the_recovery_command_resumes_the_damaged_run(campaign, tmp_path):
    """Own server (this changes the damaged run): repair the input, run the listed command, see it
    resume."""
    from engine.merge.journal import Journal

    server = CampaignServer(campaign.catalog, campaign.journals, log=tmp_path / "serve.log")
    try:
        items = [
            i
            for i in requests.get(f"{server.url}/api/recovery", timeout=30).json()["items"]
            if i["run"] == DAMAGED_RUN
        ]
        assert [i["kind"] for i in items] == ["output-failed"]
        command = items[0]["command"]
        # the run's folder was merged without --run: the command repeats that (another --run is
        # refused)
        assert command.startswith("tmbmerge merge-run ") and "--run" not in command
        shutil.copy2(campaign.spare_copy, campaign.damaged_file)  # the repaired input
        words = shlex.split(command)
        done = subprocess.run(
            [sys.executable, "-m", "bindings.cli", *words[1:], "--quiet"],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        with Journal(campaign.merged[DAMAGED_RUN]) as journal:
            assert [e.state for e in journal.entries()] == ["declared"]
        figures = requests.get(f"{server.url}/api/runs/{DAMAGED_RUN}", timeout=30).json()
        assert figures["outputs"]["declared"] == 1 and figures["outputs"]["failed"] == 0
        assert figures["outputs"]["events"] == figures["unmerged"]["produced_events"]
        left = [
            i
            for i in requests.get(f"{server.url}/api/recovery", timeout=30).json()["items"]
            if i["run"] == DAMAGED_RUN
        ]
        assert left == []
    finally:
        server.stop()


def test_an_input_skipped_as_bad_is_listed_and_its_command_merges_it(tmp_path):
    """A robust merge leaves a damaged input out: monitoring shows it with its reason, recovery
    gives the command; once the input is repaired, the command merges it and the item is gone."""
    from campaign_helpers import damage
    from conftest import generate_tmb_run

    from bindings.serve.app import Campaign
    from bindings.serve.recovery import recovery_items

    run, catalog = 178006, f"sqlite:///{tmp_path / 'cat.db'}"
    generate_tmb_run(tmp_path / "unmerged", run=run, partitions=range(3), seed=13)
    cli_subprocess(
        "catalog", "import", tmp_path / "unmerged", "--catalog", catalog, "--declare-parents"
    )
    bad = tmp_path / "unmerged" / f"tmb_{run:010d}_p001.tmb"
    spare = tmp_path / "spare.tmb"
    shutil.copy2(bad, spare)
    damage(bad)
    cli_subprocess(
        "merge-run",
        tmp_path / "unmerged",
        "--out-dir",
        tmp_path / "merged",
        "--catalog",
        catalog,
        "--declare",
        "--skip-bad",
        "--quiet",
    )
    campaign = Campaign(catalog, [tmp_path / "merged"])
    status = campaign.run_status(run)
    assert [s["file_name"] for s in status["skipped"]] == [bad.name] and status["skipped"][0][
        "reason"
    ]
    assert status["not_merged"] == [] and status["outputs"]["declared"] == 1
    items = recovery_items(status, catalog)
    assert [(i["kind"], i["subject"]) for i in items] == [("input-skipped", bad.name)]

    shutil.copy2(spare, bad)  # the good copy is back
    for command in items[0]["command"].split(" && "):
        words = shlex.split(command)
        assert words[0] == "tmbmerge"
        done = subprocess.run(
            [sys.executable, "-m", "bindings.cli", *words[1:]],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    status = campaign.run_status(run)
    assert status["skipped"] == [] and status["outputs"]["catalogued_merged_files"] == 2
    assert status["outputs"]["catalogued_merged_events"] == status["unmerged"]["produced_events"]
    assert recovery_items(status, catalog) == []
