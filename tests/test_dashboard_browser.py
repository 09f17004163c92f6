"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

``make test`` installs Playwright's Python package; the browser is the system's
``chromium`` (CI installs it). Nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from corral import Client, LocalCluster

CHROMIUM = os.environ.get("CORRAL_TEST_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("CORRAL_TEST_ARTIFACTS",
                                Path(__file__).resolve().parent.parent / "test-artifacts"))
# As root and on a closed network, chromium needs no sandbox and no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt install chromium)"),
    pytest.mark.usefixtures("no_leaks"),
]


def nap(x: int) -> int:
    import time

    time.sleep(0.02)
    return x


@pytest.mark.timeout(120)
def test_status_page_updates_live_and_leads_to_workers_and_task_detail():
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") \
            as cluster, Client(cluster) as client, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            futures = client.map(nap, range(600))  # ~6 s on two one-thread workers
            page.goto(client.dashboard_link)  # logs in, lands on /status
            assert page.url.endswith("/status")
            counter = page.locator("#finished-count")
            seen = []
            deadline = time.monotonic() + 30
            while len(set(seen)) < 3 and time.monotonic() < deadline:
                seen.append(int(counter.inner_text(timeout=10_000)))
                time.sleep(0.5)
            assert len(set(seen)) >= 3, f"the page did not update live: {seen}"
            assert seen == sorted(seen)
            assert page.locator("#worker-bars tr").count() == 2
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-status.png"), full_page=True)

            page.click("nav >> text=workers")
            page.wait_for_url("**/workers")
            rows = page.locator("#workers tr")
            rows.first.wait_for(timeout=10_000)
            assert rows.count() == 2
            assert cluster.scheduler_address.rsplit(":", 1)[0] in page.inner_text("#workers")

            page.click("nav >> text=status")
            link = page.locator("#recent a").first
            link.wait_for(timeout=10_000)
            link.click()  # the list re-renders live: which task we land on may vary
            page.wait_for_url("**/task?key=*")
            key = unquote(page.url.split("key=", 1)[1])
            page.locator("#task-state").wait_for(timeout=10_000)
            assert page.inner_text("#title") == f"Task {key}"
            assert key in {f.key for f in futures}
            assert page.inner_text("#task-state") in ("memory", "processing", "waiting")

            client.gather(futures)
            page.goto(page.url.split("/task")[0] + "/graph")
            page.locator("#graph circle").first.wait_for(timeout=10_000)
            assert page.locator("#graph circle").count() >= 1
        finally:
            browser.close()
    assert not errors, f"JavaScript console errors: {errors}"
