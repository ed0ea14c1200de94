"""The gcp profile end to end, against real local stand-ins for every cloud service.

Requests arrive in a GCS prefix or on a Pub/Sub subscription (fake-gcs-server, the gcloud Pub/Sub
emulator); callers' ID tokens are verified against certificates fetched over HTTP, as Google's
are; messages go out through SES (moto); SES event notifications come back through moto's
SNS → SQS, signed and verified; the ledger is a real Postgres and the events land in bqemulator.
The test acts as SES's event publisher, since moto never emits SES events (EMULATORS.md).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.http_peer import BackgroundHttp, QuietHandler
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.cli import process_once
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.settings import Settings
from tests.helpers import PROD_ACCOUNT, REGISTRY, request_dict, ses_event

pytestmark = pytest.mark.slow

ISSUER = "https://accounts.google.test"  # stands in for accounts.google.com
DOMAINS = ("notify.example.org", "email-testing.notify.example.org")


class _CertsServer:
    """Serves the issuer's certificates in Google's v1 format, as googleapis.com does."""

    def __init__(self, certs: dict[str, str]) -> None:
        body = json.dumps(certs).encode()

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.end_headers()
                self.wfile.write(body)

        self._http = BackgroundHttp(Handler)
        self.url = f"{self._http.base_url}/oauth2/v1/certs"

    def close(self) -> None:
        self._http.close()


@dataclass
class GcpDeployment:
    issuer: LocalIssuer
    bucket: Any
    topic: str
    publisher: Any
    moto: Any
    events_topic: str
    events_queue: str
    bigquery: EmulatorAwareBigQueryResource
    dataset: str

    def token(self, account: str = PROD_ACCOUNT) -> str:
        return self.issuer.mint(service_account=account, audience="https://notify.example.org")

    def request(self, **overrides: Any) -> bytes:
        overrides.setdefault("identity_token", self.token())
        return json.dumps(request_dict(**overrides)).encode()

    def upload(self, body: bytes, name: str | None = None) -> None:
        blob = self.bucket.blob(f"inbox/{name or uuid.uuid4().hex}.json")
        blob.upload_from_string(body, content_type="application/json", timeout=10)

    def publish(self, body: bytes) -> None:
        self.publisher.publish(self.topic, body).result(timeout=10)

    def sent(self) -> list[dict[str, Any]]:
        return self.moto.sent_raw_messages()

    def ses_notify(self, record: dict[str, Any]) -> None:
        """Publish an SES event to the configuration set's SNS topic, as SES does."""
        self.moto.client("sns").publish(TopicArn=self.events_topic, Message=json.dumps(record))

    def events(self) -> list[dict[str, Any]]:
        with self.bigquery.get_client() as client:
            rows = client.query(
                f"SELECT event_id, service, message_id, event_type, recipient, reason,"
                f" bounce_type, provider_message_id FROM `{self.dataset}.events`"
            ).result(timeout=30)
            return [dict(row.items()) for row in rows]


@pytest.fixture
def gcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: Any,
        pubsub_emulator: Any, aws_env: Any, sns_certs: Any, postgres_dsn: str,
        postgres_schema: str, bigquery_emulator: Any) -> Iterator[GcpDeployment]:
    home = tmp_path / "home"
    issuer = LocalIssuer(home / "idp", ISSUER)
    certs = _CertsServer(issuer.certs())
    bucket = gcs_emulator.new_bucket()
    topic, subscription = pubsub_emulator.new_subscription(ack_deadline_seconds=30)
    for domain in DOMAINS:
        aws_env.client("sesv2").create_email_identity(EmailIdentity=domain)
    events_topic, events_queue = aws_env.queue_for_topic(f"ses-events-{uuid.uuid4().hex[:8]}")
    dataset = f"notify_events_{uuid.uuid4().hex[:8]}"
    env = {
        "NOTIFY_PROFILE": "gcp", "NOTIFY_HOME": str(home), "NOTIFY_REGISTRY": str(REGISTRY),
        "NOTIFY_GCP_PROJECT": gcs_emulator.project, "NOTIFY_GCS_BUCKET": bucket.name,
        "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
        "NOTIFY_PUBSUB_SUBSCRIPTION": subscription, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "NOTIFY_TOKEN_CERTS_URL": certs.url, "NOTIFY_TOKEN_ISSUERS": json.dumps([ISSUER]),
        "NOTIFY_SES_REGION": aws_env.region, "NOTIFY_SES_EVENTS_QUEUE_URL": events_queue,
        "NOTIFY_SNS_TOPIC_ARNS": json.dumps([events_topic]),
        "NOTIFY_SNS_CERT_BASE_URL": sns_certs.base_url,
        "NOTIFY_LEDGER_DSN": postgres_dsn, "NOTIFY_LEDGER_SCHEMA": postgres_schema,
        "NOTIFY_BIGQUERY_ENDPOINT": bigquery_emulator.endpoint,
        "NOTIFY_BIGQUERY_PROJECT": bigquery_emulator.project, "NOTIFY_BIGQUERY_DATASET": dataset,
        "NOTIFY_PROVIDER_RETRY_SECONDS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    bigquery = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                             endpoint=bigquery_emulator.endpoint)
    publisher = pubsub_emulator.publisher()
    try:
        yield GcpDeployment(issuer, bucket, topic, publisher, aws_env, events_topic,
                            events_queue, bigquery, dataset)
    finally:
        publisher.transport.close()
        certs.close()


def _send_requests(gcp: GcpDeployment, deliver: Any) -> dict[str, str]:
    """Valid, duplicated and invalid requests; returns the expected reject reason per id."""
    deliver(gcp.request(id="ok-1", to=["alice@example.org"], bcc=["hidden@example.org"]))
    deliver(gcp.request(id="ok-2", to=["bob@example.org"]))
    deliver(gcp.request(id="ok-3", to=["carol@example.org"]))
    deliver(gcp.request(id="ok-2", to=["bob@example.org"]))  # the client enqueued it twice
    rejects = {
        "bad-svc": gcp.request(id="bad-svc", service="nobody"),
        "bad-token": gcp.request(id="bad-token", identity_token="x.y.z"),
        "bad-header": gcp.request(id="bad-header", headers={"Sender": "x@example.org"}),
        "bad-account": gcp.request(id="bad-account",
                                   identity_token=gcp.token("intruder@x-1.iam.gserviceaccount.com")),
    }
    for body in rejects.values():
        deliver(body)
    deliver(b"not json at all")
    return {"bad-svc": "unknown_service", "bad-token": "unauthenticated",
            "bad-header": "disallowed_header", "bad-account": "unauthorised"}


@pytest.mark.parametrize("inbox", ["gcs", "pubsub"])
def test_requests_are_delivered_through_ses_exactly_once(gcp, monkeypatch, inbox):
    monkeypatch.setenv("NOTIFY_INBOX", inbox)
    deliver = gcp.upload if inbox == "gcs" else gcp.publish
    expected_rejects = _send_requests(gcp, deliver)

    first = process_once(Settings())
    second = process_once(Settings())

    assert first["delivered"] == 3
    assert first["duplicates"] == 1
    assert first["rejected"] == {**Counter(expected_rejects.values()), "malformed": 1}
    assert second["delivered"] == 0 and second["requests"] == 0
    sent = gcp.sent()
    assert len(sent) == 3, "SES was handed each message once"
    assert all(b"DKIM-Signature:" in m["raw_data"].encode() for m in sent)
    ok1 = next(m for m in sent if "alice@example.org" in m["destinations"])
    assert "hidden@example.org" in ok1["destinations"], "Bcc reaches SES's envelope"
    assert "hidden@example.org" not in ok1["raw_data"]
    rows = gcp.events()
    assert len({r["event_id"] for r in rows}) == len(rows)
    kinds = Counter((r["message_id"], r["event_type"]) for r in rows)
    for message_id in ("ok-1", "ok-2", "ok-3"):
        assert kinds[(message_id, "send")] >= 1
        assert kinds[(message_id, "delivery")] == 0, "SES reports delivery later, not the run"
    rejected = {r["message_id"]: r["reason"] for r in rows if r["event_type"] == "reject"}
    assert {k: rejected[k] for k in expected_rejects} == expected_rejects
    assert gcp.token() not in json.dumps(rows, default=str)


def test_ses_events_come_back_verified_deduplicated_and_first_final_status_wins(gcp, sns_signer):
    gcp.upload(gcp.request(id="m1", to=["alice@example.org"]))
    gcp.upload(gcp.request(id="m2", to=["bounce@example.org"]))
    process_once(Settings())
    ses_ids = {}
    for message in gcp.sent():
        message_id = "m1" if "alice@example.org" in message["destinations"] else "m2"
        ses_ids[message_id] = message["id"]

    def event(name: str, message_id: str, recipient: str, **details: Any) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        record = ses_event(name, message_id=message_id, ses_id=ses_ids[message_id],
                           recipients=(recipient,), timestamp=now, **details)
        record["mail"]["tags"]["service"] = ["lookup-notices"]
        return record

    delivery = event("delivery", "m1", "alice@example.org")
    gcp.ses_notify(delivery)
    gcp.ses_notify(delivery)  # SNS delivers at least once
    gcp.ses_notify(event("complaint", "m1", "alice@example.org"))
    gcp.ses_notify(event("bounce", "m2", "bounce@example.org"))
    gcp.ses_notify(event("delivery", "m2", "bounce@example.org"))  # late, out of order
    forged = sns_signer.envelope(json.dumps(event("delivery", "m2", "bounce@example.org")),
                                 topic_arn=gcp.events_topic)
    forged["Signature"] = forged["Signature"][::-1]
    gcp.moto.client("sqs").send_message(QueueUrl=gcp.events_queue,
                                        MessageBody=json.dumps(forged))

    summary = process_once(Settings())

    rows = gcp.events()
    assert len({r["event_id"] for r in rows}) == len(rows), "each notification stored once"
    kinds = Counter((r["message_id"], r["event_type"]) for r in rows)
    assert kinds[("m1", "delivery")] == 1
    assert kinds[("m1", "complaint")] == 1, "a complaint after delivery is still recorded"
    assert kinds[("m2", "bounce")] == 1
    assert kinds[("m2", "delivery")] == 1, "the late event is stored as an event..."
    from notify_pipeline.ledger.postgres import PostgresLedger

    settings = Settings()
    ledger = PostgresLedger(settings.ledger_dsn.get_secret_value(), schema=settings.ledger_schema)
    try:
        assert ledger.final_status("lookup-notices", "m2", "bounce@example.org") == "bounce"
    finally:
        ledger.close()
    assert summary["events"] == 4, "delivery (sent twice), complaint, bounce, late delivery"

    gcp.upload(gcp.request(id="m3", to=["bounce@example.org"]))
    gcp.upload(gcp.request(id="m4", to=["alice@example.org"]))
    later = process_once(Settings())
    assert later["rejected"] == {"suppressed": 2}, "hard bounce and complaint both suppress"
