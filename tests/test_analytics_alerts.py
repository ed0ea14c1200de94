"""The analytics' own send requests: which alerts, their ids and wording, forwarded bounces, and
writing them to the local and the GCS inbox the way any service does."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from notify_pipeline.analytics.alerts import alert_requests, forwarding_requests
from notify_pipeline.analytics.rates import Level, RateRow
from notify_pipeline.analytics.store import Bounce, TopReasons
from notify_pipeline.analytics.submit import GcsInboxWriter, LocalInboxWriter, submit_requests
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.registry import Service
from notify_pipeline.request import SendRequest
from tests.emulators.gcs import gcs_emulator  # noqa: F401 (fixture)

SERVICE = Service.model_validate({
    "id": "hr-reminders", "display_name": "HR Reminders", "local_part": "hr",
    "technical_contacts": ["a@example.org", "b@example.org"],
    "service_accounts": ["hr@proj-123456.iam.gserviceaccount.com"],
    "environment": "production", "advanced": {"bounce_forwarding": ["fw@example.org"]}})


def _row(bounce: Level, complaint: Level) -> RateRow:
    return RateRow("hr-reminders", date(2026, 11, 30), 7, 1000, 120, 6, 0.12, 0.006, bounce,
                   complaint)


def test_one_alert_per_metric_at_warning_or_critical():
    reasons = TopReasons(bounce=[("550 no such user", 100)], complaint=[("abuse", 6)])
    both = alert_requests(SERVICE, _row(Level.CRITICAL, Level.WARNING), reasons)
    assert [r["id"] for r in both] == ["alert-hr-reminders-bounce-critical-2026-11-30",
                                      "alert-hr-reminders-complaint-warning-2026-11-30"]
    bounce = both[0]
    assert bounce["service"] == "notify-alerts" and bounce["to"] == ["a@example.org",
                                                                    "b@example.org"]
    assert bounce["subject"] == "hr-reminders: bounce rate critical (12.00% over 7 days)"
    for words in ("2026-11-24 to 2026-11-30", "Sent (recipients): 1000",
                  "Permanent bounces: 120", "550 no such user", "What to do:", "abuse"):
        assert words in bounce["text"]
    assert alert_requests(SERVICE, _row(Level.OK, Level.INSUFFICIENT_VOLUME), reasons) == []


def test_each_request_is_valid_wire_format():
    reasons = TopReasons()
    bounces = [Bounce("e1", "m1", "x@example.org", datetime(2026, 11, 30, tzinfo=UTC),
                      "General", "550 gone", "Hi")]
    requests = (alert_requests(SERVICE, _row(Level.WARNING, Level.CRITICAL), reasons)
                + forwarding_requests(SERVICE, bounces))
    for request in requests:
        SendRequest.model_validate_json(json.dumps({**request, "identity_token": "t"}))
    assert requests[-1]["id"] == "bounce-fwd-e1" and requests[-1]["to"] == ["fw@example.org"]


def test_written_to_the_local_inbox_with_a_token(tmp_path):
    requests = alert_requests(SERVICE, _row(Level.WARNING, Level.OK), TopReasons())
    ids = submit_requests(requests, LocalInboxWriter(tmp_path), lambda: "token-1")
    submit_requests(requests, LocalInboxWriter(tmp_path), lambda: "token-2")  # same name
    files = sorted((tmp_path / "inbox").glob("*.json"))
    assert [f.name for f in files] == [f"notify-alerts--{ids[0]}.json"]
    assert json.loads(files[0].read_text())["identity_token"] == "token-2"
    assert LocalInbox(tmp_path).waiting() == 1


def test_written_to_the_gcs_inbox_prefix(gcs_emulator):  # noqa: F811
    bucket = gcs_emulator.new_bucket()
    requests = alert_requests(SERVICE, _row(Level.CRITICAL, Level.OK), TopReasons())
    submit_requests(requests, GcsInboxWriter(bucket, "inbox/"), lambda: "token")
    blobs = list(bucket.list_blobs(prefix="inbox/"))
    assert [b.name for b in blobs] == [
        "inbox/notify-alerts--alert-hr-reminders-bounce-critical-2026-11-30.json"]
    assert json.loads(blobs[0].download_as_bytes())["identity_token"] == "token"
