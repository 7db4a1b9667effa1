"""The campaign page in a real browser: Debian's chromium, headless, driven by Playwright.

A person opens the page, pastes a site token, claims a dataset and sees it assigned to the
site, moves it to the next state, opens a run and its certification overlay (unmerged vs
merged, then against a reference run), and a screenshot of each step is written beside the
test's files (``page.png``, ``run.png``).  Skipped, saying why, where chromium or the playwright
package is missing, except under ``TMBMERGE_REQUIRE_SERVERS`` (``.ci/run``, which installs both).
"""

from __future__ import annotations

import os
import shutil

import pytest
from campaign_helpers import GOOD_RUN, REFERENCE_RUN

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _missing(reason: str):
    if os.environ.get("TMBMERGE_REQUIRE_SERVERS"):  # CI installs them: absence is a failure there
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser_page():
    try:
        from playwright import sync_api
    except ImportError:
        _missing("the playwright package is not installed")
    if not shutil.which("chromium"):
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def test_claim_a_dataset_and_open_a_certification_overlay(
    browser_page, campaign, campaign_server, tmp_path
):
    from bindings.serve.store import CampaignStore

    store = CampaignStore(campaign.catalog)
    store.add_dataset("browser-spring", runs=(GOOD_RUN, GOOD_RUN + 9))
    token = store.add_token("lyon")
    page = browser_page

    page.goto(campaign_server.url + "/")
    row = page.locator('tr[data-dataset="browser-spring"]')
    assert row.locator(".state").inner_text() == "open"
    page.fill("#token", token)
    row.get_by_role("button", name="claim").click()
    page.wait_for_function(
        "document.querySelector('tr[data-dataset=\"browser-spring\"] .state')"
        ".textContent === 'assigned'"
    )
    assert row.locator(".site").inner_text() == "lyon"
    assert "assigned to lyon" in page.locator("#message").inner_text()
    row.get_by_role("button", name="copied-to-site").click()
    page.wait_for_function(
        "document.querySelector('tr[data-dataset=\"browser-spring\"] .state')"
        ".textContent === 'copied-to-site'"
    )
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (
        store.dataset("browser-spring")["state"] == "copied-to-site"
    )  # the page changed the database

    page.reload()  # the state is the server's, not the page's
    assert page.locator('tr[data-dataset="browser-spring"] .state').inner_text() == "copied-to-site"

    page.click("text=browser-spring")
    page.wait_for_url("**/datasets/browser-spring")
    page.click(f"text={GOOD_RUN}")
    page.wait_for_url(f"**/runs/{GOOD_RUN}")
    assert page.locator("#cert-status").inner_text() == "certified"
    overlay = page.locator("#merge-plot")
    overlay.wait_for()
    page.wait_for_function(
        "document.getElementById('merge-plot').complete && "
        "document.getElementById('merge-plot').naturalWidth > 0"
    )
    assert overlay.evaluate("img => img.naturalWidth") > 800

    page.select_option("#reference", str(REFERENCE_RUN))
    page.click("#compare")
    page.wait_for_url(f"**/runs/{GOOD_RUN}?reference={REFERENCE_RUN}*")
    page.wait_for_function(
        "document.getElementById('reference-plot') && "
        "document.getElementById('reference-plot').complete && "
        "document.getElementById('reference-plot').naturalWidth > 0",
        timeout=120_000,
    )
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000 and (
        tmp_path / "run.png"
    ).stat().st_size > 50_000
