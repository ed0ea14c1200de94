"""The client's gs:// and pubsub:// inboxes against fake-gcs-server and the Pub/Sub emulator:
what it writes, the pipeline's own inbox adapters read, and the gcp profile delivers."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from google.cloud import storage

from notify_pipeline.cli import main, process_once
from notify_pipeline.client import InboxUnavailable, Session
from notify_pipeline.client.tokens import StaticToken
from notify_pipeline.events import utcnow
from notify_pipeline.inbox.gcs import GcsInbox
from notify_pipeline.inbox.gcs_store import CallLimits, GcsBatchStore
from notify_pipeline.inbox.pubsub import PubSubInbox
from notify_pipeline.request import parse_request
from notify_pipeline.settings import Settings
from tests.conftest import free_port
from tests.test_gcp_e2e import gcp  # noqa: F401 - the gcp profile's deployment fixture

if TYPE_CHECKING:
    from tests.emulators.gcs import GcsEmulator
    from tests.emulators.pubsub import PubSubEmulator

SERVICE = "lookup-notices"
LIMITS = CallLimits(timeout_seconds=10, retry_seconds=10)
TOKEN = "header.payload.signature"  # the adapters read tokens; they do not verify them


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> storage.Bucket:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    return gcs_emulator.new_bucket()


@pytest.fixture
def topic_and_subscription(pubsub_emulator: PubSubEmulator,
                           monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator.new_subscription(ack_deadline_seconds=30)


def session(inbox: str, **kwargs) -> Session:
    return Session(SERVICE, inbox, token_source=StaticToken(TOKEN), **kwargs)


def read_all(inbox, count: int) -> list[bytes]:
    batch = inbox.stage(max_items=count, max_age_seconds=0, now=utcnow() + timedelta(seconds=5))
    assert batch is not None
    return [item.body for item in inbox.read(batch)]


def test_gcs_inbox_receives_what_the_gcs_adapter_reads(bucket):
    client = session(f"gs://{bucket.name}/inbox/")
    first = client.send(to="alice@example.org", subject="One", text="1")
    client.send(to="bob@example.org", subject="Two", text="2", idempotency_key="two")
    names = [b.name for b in bucket.list_blobs(prefix="inbox/")]
    assert len(names) == 2 and all(n.endswith(".json") for n in names)
    assert any(n.endswith(f"-{SERVICE}--{first}.json") for n in names)
    inbox = GcsInbox(GcsBatchStore(bucket, limits=LIMITS), inbox_prefix="inbox/")
    requests = sorted((parse_request(b) for b in read_all(inbox, 2)), key=lambda r: r.subject)
    assert [(r.id, r.subject, r.identity_token) for r in requests] == [
        (first, "One", TOKEN), ("two", "Two", TOKEN)]


def test_gcs_uploads_are_create_only(bucket, monkeypatch):
    monkeypatch.setattr("notify_pipeline.client.session.object_name", lambda s, i: "fixed.json")
    client = session(f"gs://{bucket.name}/inbox/")
    client.send(to="alice@example.org", subject="First", text="1", idempotency_key="k")
    client.send(to="alice@example.org", subject="Second", text="2", idempotency_key="k")
    blob = bucket.blob("inbox/fixed.json")
    assert parse_request(blob.download_as_bytes()).subject == "First", "never overwritten"


def test_pubsub_inbox_receives_what_the_pubsub_adapter_reads(topic_and_subscription, bucket,
                                                            pubsub_emulator):
    topic, subscription = topic_and_subscription
    client = session(f"pubsub://{topic}")
    ids = [client.send(to="alice@example.org", subject=f"S{n}", text="t") for n in range(3)]
    subscriber = pubsub_emulator.subscriber()
    try:
        inbox = PubSubInbox(subscriber, subscription, GcsBatchStore(bucket, root="pubsub/",
                            limits=LIMITS), pull_timeout_seconds=1.0, limits=LIMITS)
        bodies = read_all(inbox, 3)
    finally:
        subscriber.close()
    assert sorted(parse_request(b).id for b in bodies) == sorted(ids)


@pytest.mark.parametrize("scheme", ["gs", "pubsub"])
def test_an_unreachable_inbox_is_retried_then_reported(monkeypatch, scheme):
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{closed}")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", closed)
    url = "gs://bucket/inbox/" if scheme == "gs" else "pubsub://projects/p/topics/notify"
    client = session(url, timeout_seconds=1.0, max_attempts=2)
    with pytest.raises(InboxUnavailable) as info:
        client.send(to="alice@example.org", subject="s", text="t")
    assert info.value.inbox == url
    assert TOKEN not in str(info.value)


def test_enqueue_publishes_to_a_named_topic(topic_and_subscription, capsys, monkeypatch):
    # An explicit inbox and token need none of the server's configuration.
    topic = topic_and_subscription[0]
    code = main(["enqueue", "--service", SERVICE, "--to", "a@example.org", "--subject", "s",
                 "--text", "t", "--id", "cli-1", "--token", TOKEN, "--inbox", f"pubsub://{topic}"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["id"] == "cli-1" and report["location"].startswith(f"pubsub://{topic}#")
    assert "rejected" not in report


@pytest.mark.slow
@pytest.mark.parametrize("inbox", ["gcs", "pubsub"])
def test_the_gcp_profile_delivers_what_the_client_sends(gcp, monkeypatch, inbox):  # noqa: F811
    monkeypatch.setenv("NOTIFY_INBOX", inbox)
    url = f"gs://{gcp.bucket.name}/inbox/" if inbox == "gcs" else f"pubsub://{gcp.topic}"
    client = Session(SERVICE, url, token_source=StaticToken(gcp.token()))
    client.send(to="alice@example.org", subject="Hello", text="Hi", html="<p>Hi</p>",
                attachments=[("a.txt", b"attached", "text/plain")], idempotency_key="c-1")
    client.send(to="alice@example.org", subject="Hello", text="Hi", idempotency_key="c-1")
    client.send(to="bob@example.org", cc="carol@example.org", subject="Second", text="2")
    summary = process_once(Settings())
    assert (summary["delivered"], summary["duplicates"], summary["rejected"]) == (2, 1, {})
    sent = gcp.sent()
    assert len(sent) == 2
    first = next(m for m in sent if "alice@example.org" in m["destinations"])
    assert 'filename="a.txt"' in first["raw_data"] and "DKIM-Signature:" in first["raw_data"]

