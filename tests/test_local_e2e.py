"""The local profile end to end: inbox files → sensor → Dagster runs → SMTP sink → DuckDB events.

Everything here is real: the aiosmtpd sink on 127.0.0.1, the Dagster job executed in process,
the SQLite ledger and the DuckDB warehouse. Only time is arranged (back-dated receive times).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from collections import Counter
from datetime import timedelta

import pytest

from notify_pipeline.cli import process_once
from notify_pipeline.dns import dns_records, verify
from notify_pipeline.events import utcnow
from notify_pipeline.registry import load_registry
from notify_pipeline.signing import DkimKeyStore
from notify_pipeline.sink import MaildirSink
from tests.helpers import REGISTRY, hostile_cases, request_dict

TEST_SERVICE = "lookup-notices-test"
_REGISTRY = load_registry(REGISTRY)
TEST_ACCOUNT = _REGISTRY[TEST_SERVICE].service_accounts[0]
HR_ACCOUNT = _REGISTRY["hr-reminders"].service_accounts[0]


def dkim_records(local):
    s = local.settings
    domains = [s.domain, s.testing_domain]
    keys = DkimKeyStore(s.keys_dir, s.dkim_selector).keys(domains)
    return dns_records(domains=domains, keys=keys)


def test_valid_requests_are_delivered_once_and_signed(local, sink):
    local.enqueue(local.request(id="plain"))
    local.enqueue(local.request(id="tagged", from_tag="reminders", cc=["carol@example.org"],
                                bcc=["dave@example.org"], reply_to=["desk@example.org"]))
    attachment = {"filename": "note.txt", "content_type": "text/plain",
                  "content_base64": base64.b64encode(b"attached").decode()}
    local.enqueue(local.request(id="rich", text=None, html="<p>Hi</p>",
                                attachments=[attachment], tags={"campaign": "spring"}))

    summary = process_once(local.settings)

    assert summary["delivered"] == 3
    assert summary["rejected"] == {}
    mail = local.maildir()
    assert len(mail) == 3
    records = dkim_records(local)
    for raw in mail:
        assert verify(raw, records), "every delivered message carries a verifying DKIM signature"
    tagged = next(m for m in mail if b"lookup+reminders@" in m)
    parsed = email.message_from_bytes(tagged, policy=email.policy.default)
    assert parsed["From"].addresses[0].display_name == "Lookup Notices"
    del parsed["X-Original-To"]  # the sink's envelope record, as a delivering MTA adds it
    assert "dave@example.org" not in str(parsed), "Bcc never appears in the message"
    assert "dave@example.org" in tagged.decode().split("\r\n\r\n")[0], "but it was a recipient"
    assert parsed["Reply-To"] == "desk@example.org"


def test_events_record_each_recipient_and_are_written_once(local, sink):
    local.enqueue(local.request(id="m1", cc=["carol@example.org"], tags={"k": "v"}))
    first = process_once(local.settings)
    second = process_once(local.settings)

    rows = local.events()
    kinds = Counter((r["recipient"], r["event_type"]) for r in rows)
    for rcpt in ("alice@example.org", "carol@example.org"):
        assert kinds[(rcpt, "queued")] == kinds[(rcpt, "send")] == kinds[(rcpt, "delivery")] == 1
    assert len({r["event_id"] for r in rows}) == len(rows)
    assert all(json.loads(r["tags"]) == {"k": "v"} for r in rows)
    assert {r["provider_message_id"] for r in rows if r["event_type"] == "send"} != {None}
    assert first["events"] == len(rows)
    assert second["delivered"] == 0 and second["events"] == 0


def test_duplicate_request_in_one_pass_and_across_passes_delivers_once(local, sink):
    local.enqueue(local.request(id="same"))
    local.enqueue(local.request(id="same"))
    first = process_once(local.settings)
    local.enqueue(local.request(id="same"))
    second = process_once(local.settings)

    assert (first["delivered"], first["duplicates"]) == (1, 1)
    assert (second["delivered"], second["duplicates"]) == (0, 1)
    assert len(local.maildir()) == 1
    assert not any((local.home / "inbox").glob("*.json"))


def test_a_request_enqueued_again_under_the_same_file_name_counts_as_a_duplicate(local, sink):
    local.enqueue(local.request(id="same"), name="lookup-notices--same.json")
    first = process_once(local.settings)
    local.enqueue(local.request(id="same"), name="lookup-notices--same.json")
    second = process_once(local.settings)

    assert (first["delivered"], first["duplicates"]) == (1, 0)
    assert (second["requests"], second["delivered"], second["duplicates"]) == (1, 0, 1)
    assert len(local.maildir()) == 1


def _reject_cases(local):
    """(request body, expected reason) pairs, one per reject reason docs/send-request.md lists."""
    now = utcnow()
    expired = local.token(now=now - timedelta(hours=3), ttl_seconds=3600)
    return [
        (b"{not json", "malformed"),
        (local.request(id="r-unknown-field", colour="red"), "malformed"),
        (local.request(id="r-unknown-svc", service="nobody"), "unknown_service"),
        (local.request(id="r-expired", identity_token=expired), "unauthenticated"),
        (local.request(id="r-garbage-token", identity_token="not.a.jwt"), "unauthenticated"),
        (local.request(id="r-wrong-aud", identity_token=local.token(audience="https://other")),
         "unauthenticated"),
        (local.request(id="r-other-account", identity_token=local.token(HR_ACCOUNT)),
         "unauthorised"),
        (local.request(id="r-not-allowed", service=TEST_SERVICE, to=["stranger@example.org"],
                       identity_token=local.token(TEST_ACCOUNT)), "recipient_not_allowed"),
        (local.request(id="r-injection", subject="Hi\r\nBcc: victim@example.org"),
         "header_injection"),
        (local.request(id="r-from-header", headers={"From": "boss@example.org"}),
         "disallowed_header"),
        (local.request(id="r-reply-to", service="hr-reminders", reply_to=["x@example.org"],
                       identity_token=local.token(HR_ACCOUNT)), "reply_to_not_enabled"),
        (local.request(id="r-huge", text="x" * (10 * 1024 * 1024 + 1)), "too_large"),
    ]


def test_every_reject_reason_end_to_end(local, sink):
    cases = _reject_cases(local)
    paths = {local.enqueue(body).name: reason for body, reason in cases}

    summary = process_once(local.settings)

    assert local.maildir() == [], "nothing rejected reaches the provider"
    assert summary["delivered"] == 0
    assert summary["rejected"] == dict(Counter(paths.values()))
    rows = local.events("event_type = 'reject'")
    by_id = {r["message_id"]: r["reason"] for r in rows}
    for body, reason in cases:
        if isinstance(body, dict) and body["id"] != "r-unknown-field":
            assert by_id[body["id"]] == reason
    quarantined = sorted((local.home / "rejected").glob("*.json"))
    assert len(quarantined) == len(cases)
    for path in quarantined:
        assert ".reason" not in path.name
        assert (path.parent / (path.name + ".reason")).read_text().strip()


def test_tokens_never_reach_events_or_quarantine(local, sink):
    token = local.token(HR_ACCOUNT)
    local.enqueue(local.request(id="leak", identity_token=token))  # unauthorised
    local.enqueue(local.request(id="ok"))
    process_once(local.settings)

    stored = json.dumps(local.events(), default=str)
    quarantine = "".join(p.read_text() for p in (local.home / "rejected").iterdir())
    for text in (stored, quarantine):
        assert token not in text
        assert token.split(".")[2][:20] not in text


def test_token_expiry_is_judged_when_the_inbox_received_the_request(local, sink):
    now = utcnow()
    token = local.token(now=now - timedelta(minutes=10), ttl_seconds=300)  # expired 5 min ago
    local.enqueue(local.request(id="early", identity_token=token),
                  received_at=now - timedelta(minutes=8))
    local.enqueue(local.request(id="late", identity_token=token))

    summary = process_once(local.settings)

    assert summary["delivered"] == 1
    assert summary["rejected"] == {"unauthenticated": 1}
    assert {r["message_id"] for r in local.events("event_type = 'delivery'")} == {"early"}


def test_permanent_bounce_suppresses_the_recipient(local, sink):
    local.enqueue(local.request(id="b1", to=["bounce-me@example.org", "alice@example.org"]))
    first = process_once(local.settings)
    local.enqueue(local.request(id="b2", to=["bounce-me@example.org", "alice@example.org"]))
    local.enqueue(local.request(id="b3", to=["Bounce-Me@example.org"]))
    second = process_once(local.settings)

    assert first["delivered"] == 1
    [bounce] = local.events("event_type = 'bounce'")
    assert (bounce["message_id"], bounce["bounce_type"]) == ("b1", "Permanent")
    assert bounce["reason"].startswith("550")
    suppressed = local.events("reason = 'suppressed'")
    assert {(r["message_id"], r["recipient"].lower()) for r in suppressed} == {
        ("b2", "bounce-me@example.org"), ("b3", "bounce-me@example.org")}
    assert second["delivered"] == 1
    assert second["rejected"] == {"suppressed": 1}
    envelopes = [email.message_from_bytes(m)["X-Original-To"] for m in local.maildir()]
    assert sorted(envelopes) == ["alice@example.org", "alice@example.org"]


def test_provider_outage_hands_messages_back_then_fails_after_bounded_attempts(local):
    local.enqueue(local.request(id="o1"))
    passes = [process_once(local.settings) for _ in range(5)]  # nothing listens on SMTP

    assert [p["deferred"] for p in passes] == [1, 1, 1, 1, 0], "handed back four times"
    assert [p["failed"] for p in passes] == [0, 0, 0, 0, 1], "then failed, once"
    assert sum(p["delivered"] for p in passes) == 0
    [failure] = local.events("event_type = 'failure'")
    assert failure["reason"].startswith("provider_unavailable")


def test_an_outage_counts_against_the_messages_offered_not_those_waiting(local, monkeypatch):
    monkeypatch.setenv("NOTIFY_PROVIDER_RETRY_SECONDS", "0")
    monkeypatch.setenv("NOTIFY_SMTP_CONNECTIONS", "1")  # one at a time: two wait behind the first
    for n in (1, 2, 3):
        local.enqueue(local.request(id=f"w{n}", subject=f"w{n}"))
    passes = [process_once(local.settings) for _ in range(5)]  # nothing listens on SMTP
    assert [p["failed"] for p in passes] == [0, 0, 0, 0, 1]
    [failure] = local.events("event_type = 'failure'")  # the one offered five times
    assert failure["reason"].startswith("provider_unavailable")

    with MaildirSink(local.settings.mail_dir, port=local.port):
        recovered = process_once(local.settings)
    assert recovered["delivered"] == 2, "the two that waited behind it still had every attempt"
    assert len(local.maildir()) == 2


def test_outage_then_recovery_delivers(local, monkeypatch):
    monkeypatch.setenv("NOTIFY_PROVIDER_RETRY_SECONDS", "1")
    local.enqueue(local.request(id="later"))
    first = process_once(local.settings)
    assert (first["deferred"], first["failed"]) == (1, 0)
    assert local.events("event_type IN ('failure', 'delivery')") == []

    time.sleep(1.2)  # the batch's retry delay passes
    with MaildirSink(local.settings.mail_dir, port=local.port):
        second = process_once(local.settings)
    assert second["delivered"] == 1
    assert len(local.maildir()) == 1


@pytest.mark.parametrize("count", [1, 7])
def test_batches_respect_the_size_bound(local, sink, monkeypatch, count):
    monkeypatch.setenv("NOTIFY_BATCH_MAX_SIZE", "3")
    for n in range(count):
        local.enqueue(local.request(id=f"n{n}"))
    summary = process_once(local.settings)
    assert summary["delivered"] == count
    assert summary["batches"] == -(-count // 3)


def test_request_for_a_malformed_body_still_gets_an_event(local, sink):
    local.enqueue(json.dumps(request_dict(id="x", version=9, identity_token="t")).encode())
    process_once(local.settings)
    [row] = local.events()
    assert (row["service"], row["message_id"], row["reason"]) == ("lookup-notices", "x",
                                                                  "malformed")


def test_hostile_requests_are_rejected_and_never_stop_the_batch(local, sink, caplog):
    cases = hostile_cases(local)
    for body, _ in cases:
        local.enqueue(body.encode())
    for n in range(5):
        local.enqueue(local.request(id=f"valid-{n}"))
    (local.home / "inbox" / "folder.json").mkdir()  # not a file: set aside and reported
    caplog.set_level("WARNING", logger="notify_pipeline.inbox.local")

    summary = process_once(local.settings)

    assert summary["delivered"] == 5, "every valid request beside them is delivered"
    assert summary["rejected"] == dict(Counter(reason for _, reason in cases))
    assert {r["message_id"] for r in local.events("event_type = 'delivery'")} == {
        f"valid-{n}" for n in range(5)}
    assert local.events("event_type = 'failure'") == []
    by_id = {r["message_id"]: r["reason"] for r in local.events("event_type = 'reject'")}
    for body, reason in cases:
        request_id = json.loads(body)["id"] if reason != "malformed" else None
        if request_id:
            assert by_id[request_id] == reason, request_id
    kept = list((local.home / "rejected").glob("*.json"))
    assert len([p for p in kept if p.is_file()]) == len(cases)
    assert [p.name.split("--")[1] for p in kept if p.is_dir()] == ["folder.json"], "set aside"
    assert not (local.home / "inbox" / "folder.json").exists()
    assert "folder.json" in caplog.text and "not a file" in caplog.text
    assert process_once(local.settings)["requests"] == 0, "and it never becomes a request"
