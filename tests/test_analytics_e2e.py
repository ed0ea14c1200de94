"""End to end on the local profile: an event history written straight into the events table,
`notify analytics`, then `notify process` with the sink delivers one alert per crossing (and one
forwarded bounce per permanent bounce); both again the same day send nothing more."""

from __future__ import annotations

import csv
import email
import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook

from notify_pipeline import cli
from notify_pipeline.analytics.duckdb_store import DuckDBAnalytics
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse
from tests.analytics_seed import seed
from tests.helpers import REGISTRY

SERVICES = {
    "high-bounce": "technical_contacts: [hb-team@example.org, hb-oncall@example.org]\n",
    "high-complaint": "technical_contacts: [hc-team@example.org]\n",
    "tiny": "technical_contacts: [tiny-team@example.org]\n",
    "silent": "technical_contacts: [silent-team@example.org]\n",
    "forwarder": "technical_contacts: [fw-team@example.org]\n"
                 "advanced:\n  bounce_forwarding: [fw-bounces@example.org]\n",
}


@pytest.fixture
def deployment(local, tmp_path, monkeypatch):
    registry = tmp_path / "registry"
    shutil.copytree(REGISTRY, registry)
    for sid, extra in SERVICES.items():
        (registry / f"{sid}.yaml").write_text(
            f"id: {sid}\ndisplay_name: {sid.title()}\nlocal_part: {sid}\n{extra}"
            f"service_accounts: [{sid}@proj-123456.iam.gserviceaccount.com]\n"
            "environment: production\n")
    monkeypatch.setenv("NOTIFY_REGISTRY", str(registry))
    return local


def _history(warehouse: DuckDBWarehouse, now: datetime) -> None:
    today = now.date()
    day = timedelta(days=1)
    seed(warehouse, "high-bounce", today - 2 * day, "send", 150)
    seed(warehouse, "high-bounce", today - 2 * day, "delivery", 130)
    seed(warehouse, "high-bounce", today - 2 * day, "bounce", 12, bounce_type="Permanent",
         reason="550 5.1.1 no such user")
    seed(warehouse, "high-bounce", today - 2 * day, "bounce", 5, bounce_type="Transient")
    seed(warehouse, "high-bounce", today - 100 * day, "send", 40)  # outside window and export
    # Late: bounces recorded now for messages sent five days ago.
    seed(warehouse, "high-bounce", today - 5 * day, "send", 50, recorded_at=now - 3 * day)
    seed(warehouse, "high-bounce", today - 5 * day, "bounce", 6, bounce_type="Permanent",
         reason="550 mailbox unavailable", recorded_at=now)
    seed(warehouse, "high-complaint", today, "send", 1000, recorded_at=now)
    seed(warehouse, "high-complaint", today, "complaint", 2, reason="abuse", recorded_at=now)
    seed(warehouse, "tiny", today - day, "send", 20)
    seed(warehouse, "tiny", today - day, "bounce", 10, bounce_type="Permanent")
    seed(warehouse, "forwarder", today - day, "send", 30)
    seed(warehouse, "forwarder", today - day, "bounce", 3, bounce_type="Permanent",
         reason="550 gone")


def _run(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _mail(deployment) -> list[email.message.Message]:
    return [email.message_from_bytes(raw) for raw in deployment.maildir()]


@pytest.mark.slow
def test_analytics_then_process_sends_one_alert_per_crossing(deployment, sink, capsys):
    now = datetime.now(UTC)
    warehouse = DuckDBWarehouse(deployment.settings.warehouse_path)
    warehouse.ensure_schema()
    _history(warehouse, now)

    out = _run(capsys, "analytics")["services"]
    assert set(out) >= set(SERVICES) | {"lookup-notices", "notify-alerts"}
    assert out["high-bounce"] == {
        "rows": 393, "sent": 200, "bounce_rate": 18 / 200, "complaint_rate": 0.0,
        "bounce_level": "warning", "complaint_level": "ok", "alerts": 1}
    assert out["high-complaint"] == {
        "rows": 1002, "sent": 1000, "bounce_rate": 0.0, "complaint_rate": 0.002,
        "bounce_level": "ok", "complaint_level": "warning", "alerts": 1}
    assert out["tiny"]["bounce_level"] == out["tiny"]["complaint_level"] == "insufficient_volume"
    assert out["tiny"]["bounce_rate"] == 0.5 and out["tiny"]["alerts"] == 0
    assert out["silent"] == {
        "rows": 0, "sent": 0, "bounce_rate": 0.0, "complaint_rate": 0.0,
        "bounce_level": "insufficient_volume", "complaint_level": "insufficient_volume",
        "alerts": 0}

    # The tables, to the row.
    rows = warehouse.query("SELECT service, count(*) FROM notify_events.events_high_bounce"
                           " GROUP BY service")
    assert rows == [("high-bounce", 393)]
    store = DuckDBAnalytics(warehouse)
    today, day = now.date(), timedelta(days=1)
    assert [r[1:] for r in store.daily_rows("high-bounce")] == [
        (today - 100 * day, 40, 0, 0, 0, 0, 0, 0, 0),
        (today - 5 * day, 50, 0, 6, 0, 0, 0, 0, 0),
        (today - 2 * day, 150, 130, 12, 5, 0, 0, 0, 0),
    ]
    assert [r[1:] for r in store.rate_history("high-bounce")] == [
        (today, 7, 200, 18, 0, 0.09, 0.0, "warning", "ok")]

    # Exports: the last 90 days of the service's events.
    export = deployment.home / "exports" / "high-bounce"
    with (export / "events.csv").open() as fh:
        assert sum(1 for _ in csv.reader(fh)) == 1 + 353
    assert load_workbook(export / "events.xlsx")["events"].max_row == 1 + 353
    assert json.loads((deployment.home / "dns-records.json").read_text())

    _run(capsys, "process")
    mail = _mail(deployment)
    alerts = sorted((m["To"], m["Subject"]) for m in mail if "rate" in m["Subject"])
    assert alerts == [
        ("hb-team@example.org, hb-oncall@example.org",
         "high-bounce: bounce rate warning (9.00% over 7 days)"),
        ("hc-team@example.org", "high-complaint: complaint rate warning (0.20% over 7 days)"),
    ]
    forwarded = [m for m in mail if "permanent bounce" in m["Subject"]]
    assert len(forwarded) == 3 and {m["To"] for m in forwarded} == {"fw-bounces@example.org"}
    assert all(m["From"].endswith("<notify-alerts@notify.example.org>") for m in mail)

    again = _run(capsys, "analytics")["services"]
    assert again["high-bounce"]["bounce_level"] == "warning"
    processed = _run(capsys, "process")
    assert processed["delivered"] == 0, processed
    assert len(_mail(deployment)) == len(mail)


def test_analytics_refuses_an_unknown_service(deployment, capsys):
    assert cli.main(["analytics", "--service", "nope"]) == 2
    assert "not registered: nope" in capsys.readouterr().err
