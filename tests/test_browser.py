"""The operator's console in a real browser: `notify up`, then headless Chromium drives the UI.

Debian's `chromium` is driven by Playwright through `executable_path` (no browser download).
Screenshots are saved under `test-artifacts/screenshots/` for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from benchmarks.harness import session_members
from tests.helpers import REPO
from tests.test_up import FINISHED, start_up, started_worker, status_of, ui_ready, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SENSORS = ("delivery_worker_sensor", "inbox_sensor", "registry_sensor", "services_sensor")
LOCATION = "notify_pipeline.definitions"
LINEAGE_GROUP = "analytics"
ASSET_KEYS = ("events", "service_events", "daily_stats", "bounce_rates", "bounce_rate_alerts",
              "sheets_export", "dns_records", "event_retention")
# What each sensor's skipped ticks say while a worker run is in charge.
SKIP_REASONS = {"registry_sensor": "registry valid: 4 services",
                "inbox_sensor": "it has the inbox",
                "delivery_worker_sensor": "every delivery worker slot is filled"}


@pytest.fixture
def console(local, tmp_path) -> Iterator[tuple[int, dg.DagsterInstance]]:
    """`notify up` on free ports, its worker runs lasting 30 s so one ends during the test."""
    log = (tmp_path / "up.log").open("wb")
    proc, ui_port = start_up(local, log, NOTIFY_WORKER_MAX_SECONDS="30")
    instance = None
    try:
        wait_for(lambda: ui_ready(ui_port), 180, "the Dagster UI")
        instance = dg.DagsterInstance.from_config(str(local.home / "dagster"))
        yield ui_port, instance
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        finally:
            for pid in session_members(proc.pid):
                os.kill(pid, signal.SIGKILL)
            if instance is not None:
                instance.dispose()
            log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            launched.close()


def sensor_rows(page: Any, url: str) -> dict[str, str]:
    """The automation page's row text of each of our sensors, the page loaded afresh."""
    page.goto(url)
    rows = {}
    for sensor in SENSORS:
        row = page.locator("div[class^='ListItem_listItem__']",
                           has=page.locator(f"a[href$='/sensors/{sensor}']"))
        row.wait_for(timeout=30_000)
        rows[sensor] = row.inner_text()
    return rows


def open_latest_skipped_tick(page: Any, url: str, reason: str, seconds: float = 120) -> None:
    """Open the sensor page's latest skipped tick and wait for `reason` in it, reloading while
    it has none yet or skipped for another reason: the worker sensor's ticks request
    successors while its short-lived runs hand over (they last 30 s here), and on a loaded
    machine its first skipped tick for `reason` can be a minute away."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + seconds
    while True:
        page.goto(url)
        try:
            page.get_by_role("button", name="0 runs requested").first.click(timeout=15_000)
            page.get_by_role("dialog").get_by_text(reason).first.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() >= deadline:
                raise


def test_sensors_show_their_last_tick_and_a_worker_run_its_outcome_table(local, console,
                                                                          browser):
    ui_port, instance = console
    page = browser
    first = started_worker(instance, 180)
    local.enqueue(local.request(id="ui-1"))
    local.enqueue(local.request(id="ui-2", service="nobody"))
    wait_for(lambda: len(local.maildir()) == 1, 60, "the delivery")

    sensor_rows(page, f"http://127.0.0.1:{ui_port}/automation")
    page.screenshot(path=str(SCREENSHOTS / "sensors.png"), full_page=True)
    for sensor, skipped in SKIP_REASONS.items():
        open_latest_skipped_tick(page, f"http://127.0.0.1:{ui_port}/locations/{LOCATION}"
                                 f"/sensors/{sensor}", skipped)  # and why it skipped
        page.screenshot(path=str(SCREENSHOTS / f"{sensor}.png"), full_page=True)

    wait_for(lambda: status_of(instance, first.run_id) in FINISHED, 90, "the worker to end")
    assert status_of(instance, first.run_id) is dg.DagsterRunStatus.SUCCESS
    page.goto(f"http://127.0.0.1:{ui_port}/runs/{first.run_id}")
    outcomes = page.locator("tr", has=page.locator("td", has_text="outcomes")).get_by_text(
        "[Show Markdown]")
    outcomes.first.click(timeout=30_000)
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("rejected: unknown_service").wait_for(timeout=10_000)
    table = dialog.inner_text()
    assert "delivered" in table and "ui-2" in table, "counts, and the rejected request's id"
    page.screenshot(path=str(SCREENSHOTS / "worker-run-outcomes.png"), full_page=True)

    page.goto(f"http://127.0.0.1:{ui_port}/locations/{LOCATION}/asset-groups/{LINEAGE_GROUP}")
    for key in ASSET_KEYS:  # each asset is a node of the lineage graph
        page.get_by_text(key, exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "asset-lineage.png"), full_page=True)
