"""The Pub/Sub inbox against the Google Cloud CLI's Pub/Sub emulator, its batches kept in the GCS
emulator, and through the real pipeline (see `test_inbox_gcs` for the harness)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from google.api_core.exceptions import ResourceExhausted
from google.cloud import storage
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

from notify_pipeline.inbox.gcs_store import GcsBatchStore
from notify_pipeline.inbox.pubsub import PubSubInbox
from tests.conftest import LocalDeployment
from tests.test_inbox_gcs import (
    LIMITS,
    MAX_BYTES,
    Harness,
    contents,
    make_harness,
    now,
    staged,
)

if TYPE_CHECKING:  # imported at run time by pytest_plugins, so that pytest rewrites its asserts
    from tests.emulators.gcs import GcsEmulator
    from tests.emulators.pubsub import PubSubEmulator


ACK_DEADLINE = 10  # the subscription's; every give-back below must beat it by far


@pytest.fixture
def harness(local: LocalDeployment) -> Iterator[Harness]:
    built = make_harness(local)
    yield built
    built.ledger.close()


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> storage.Bucket:
    return gcs_emulator.new_bucket()


@pytest.fixture
def topic_and_subscription(pubsub_emulator: PubSubEmulator) -> tuple[str, str]:
    return pubsub_emulator.new_subscription(ack_deadline_seconds=ACK_DEADLINE)


@pytest.fixture
def publisher(pubsub_emulator: PubSubEmulator) -> Iterator[PublisherClient]:
    client = pubsub_emulator.publisher()
    yield client
    client.transport.close()


@pytest.fixture
def subscriber(pubsub_emulator: PubSubEmulator) -> Iterator[SubscriberClient]:
    client = pubsub_emulator.subscriber()
    yield client
    client.close()


@pytest.fixture
def make_inbox(subscriber, topic_and_subscription, bucket):
    def make(*, lease_seconds: int = 60, stale_after_seconds: float = 300.0,
             max_item_bytes: int = MAX_BYTES) -> PubSubInbox:
        store = GcsBatchStore(bucket, root="pubsub/", max_item_bytes=max_item_bytes,
                              stale_after_seconds=stale_after_seconds, limits=LIMITS)
        return PubSubInbox(subscriber, topic_and_subscription[1], store,
                           pull_timeout_seconds=1.0, lease_seconds=lease_seconds, limits=LIMITS)
    return make


@pytest.fixture
def publish(publisher, topic_and_subscription):
    def publish(*bodies: bytes | dict[str, Any]) -> list[str]:
        futures = [publisher.publish(topic_and_subscription[0],
                                     json.dumps(b).encode() if isinstance(b, dict) else b)
                   for b in bodies]
        return [f.result(timeout=30) for f in futures]
    return publish


def stage_when_redelivered(inbox: PubSubInbox, count: int) -> str:
    """Stage `count` messages once their lease ran out (bounded wait)."""
    deadline = time.monotonic() + 3 * ACK_DEADLINE
    while time.monotonic() < deadline:
        batch = inbox.stage(max_items=count, max_age_seconds=3600, now=now())
        if batch is not None:
            return batch
    raise AssertionError("messages were not redelivered")


def test_messages_are_given_back_at_once_when_the_bound_is_not_met(make_inbox, publish):
    inbox = make_inbox()
    ids = publish(b"{}", b"{}", b"{}")

    started = time.monotonic()
    assert inbox.stage(max_items=4, max_age_seconds=3600, now=now()) is None
    assert (inbox.waiting(), inbox.batches()) == (3, [])
    batch = inbox.stage(max_items=3, max_age_seconds=3600, now=now())

    assert time.monotonic() - started < ACK_DEADLINE / 2, "pulled again at once"
    assert batch is not None and inbox.batches() == [batch]
    assert sorted(i.key for i in inbox.read(batch)) == sorted(ids)
    assert inbox.stage(max_items=1, max_age_seconds=0, now=now()) is None, "all acknowledged"


def test_the_age_bound_stages_a_small_batch(make_inbox, publish):
    inbox = make_inbox()
    publish(b"{}", b"{}")

    assert inbox.stage(max_items=5, max_age_seconds=60, now=now()) is None
    batch = inbox.stage(max_items=5, max_age_seconds=60, now=now() + timedelta(seconds=61))

    assert batch is not None and len(list(inbox.read(batch))) == 2


def test_receive_time_is_publish_time(make_inbox, publish, subscriber, topic_and_subscription,
                                      pubsub_emulator):
    topic = topic_and_subscription[0]
    witness = subscriber.create_subscription(
        name=subscriber.subscription_path(pubsub_emulator.project, topic.rsplit("/", 1)[1] + "-w"),
        topic=topic, timeout=10).name
    [message_id] = publish(b'{"x": 1}')
    [seen] = subscriber.pull(subscription=witness, max_messages=1, timeout=10).received_messages
    inbox = make_inbox()

    batch = staged(inbox, 1)

    [item] = list(inbox.read(batch))
    assert (item.key, item.body) == (message_id, b'{"x": 1}')
    assert item.received_at == seen.message.publish_time


def test_nothing_is_acknowledged_before_it_is_staged(make_inbox, publish, monkeypatch):
    inbox = make_inbox(lease_seconds=1)
    ids = publish(b"{}", b"{}", b"{}")
    written: list[str] = []

    def crash_on_second_write(batch_id, key, body, received):
        if written:
            raise RuntimeError("stager killed while writing")
        written.append(key)
        GcsBatchStore.put(inbox.store, batch_id, key, body, received)

    with monkeypatch.context() as patched:
        patched.setattr(inbox.store, "put", crash_on_second_write)
        with pytest.raises(RuntimeError):
            inbox.stage(max_items=3, max_age_seconds=0, now=now())
    assert inbox.batches() == [], "a half-written batch stays hidden"

    batch = stage_when_redelivered(inbox, 3)

    assert sorted(i.key for i in inbox.read(batch)) == sorted(ids), "all three came back"


def test_a_half_written_batch_is_sealed_once_stale(make_inbox, publish, monkeypatch):
    inbox = make_inbox(lease_seconds=1, stale_after_seconds=0)
    publish(b"{}", b"{}")
    with monkeypatch.context() as patched:
        patched.setattr(inbox.store, "seal", lambda batch_id: None)  # killed before sealing
        inbox.stage(max_items=2, max_age_seconds=0, now=now())
    assert inbox.batches() == []

    assert inbox.stage(max_items=5, max_age_seconds=3600, now=now()) is None

    assert len(inbox.batches()) == 1


def test_a_batch_staged_but_not_acknowledged_is_delivered_once(make_inbox, publish, local,
                                                                harness, monkeypatch, bucket):
    inbox = make_inbox(lease_seconds=1)
    token = local.token()
    publish(local.request(id="m1", identity_token=token))
    with monkeypatch.context() as patched:
        patched.setattr(inbox, "_acknowledge", lambda ack_ids: None)  # killed before the ack
        first = inbox.stage(max_items=1, max_age_seconds=0, now=now())
    second = stage_when_redelivered(inbox, 1)
    assert first != second, "a redelivery never reuses a batch id"

    runs = [harness.run(inbox, first), harness.run(inbox, second)]

    assert [r.delivered for r in runs] == [1, 0]
    assert len(harness.transport.sent) == 1
    assert inbox.batches() == []
    assert all(token.encode() not in body for body, _meta in contents(bucket).values())


def test_rejected_and_finished_messages_keep_no_token(make_inbox, publish, local, harness,
                                                      bucket):
    inbox = make_inbox()
    tokens = [local.token() for _ in range(3)]
    ok, unknown, binary = publish(
        local.request(id="ok", identity_token=tokens[0]),
        local.request(id="u", service="nope", identity_token=tokens[1]),
        b"\xff\xfe not json " + tokens[2].encode(),
    )
    batch = staged(inbox, 3)

    summary = harness.run(inbox, batch)

    assert summary.delivered == 1
    assert dict(summary.rejected) == {"unknown_service": 1, "malformed": 1}
    stored = contents(bucket)
    assert sorted(stored) == sorted([f"pubsub/done/{batch}/{ok}",
                                     f"pubsub/rejected/{batch}/{unknown}",
                                     f"pubsub/rejected/{batch}/{binary}"])
    for name, (body, meta) in stored.items():
        for token in tokens:
            assert token.encode() not in body and token not in json.dumps(meta), name


def test_a_message_near_pubsubs_size_limit_is_staged_whole(make_inbox, publish, harness, bucket):
    """9.9 MB: over gRPC's default 4 MiB receive limit and over the 8 MiB above which uploads
    are resumable; read back only up to a 4 MiB request limit, then rejected as too large."""
    limit = 4 * 1024 * 1024
    inbox = make_inbox(max_item_bytes=limit)
    harness.pipeline.max_request_bytes = limit
    [message_id] = publish(b"x" * 9_900_000)

    batch = staged(inbox, 1)

    assert bucket.get_blob(f"pubsub/batches/{batch}/{message_id}", timeout=10).size == 9_900_000
    [item] = list(inbox.read(batch))
    assert len(item.body) == limit + 1
    assert dict(harness.run(inbox, batch).rejected) == {"too_large": 1}


def test_an_empty_subscription_answers_within_the_pull_timeout(make_inbox):
    inbox = make_inbox()
    started = time.monotonic()

    assert inbox.stage(max_items=10, max_age_seconds=0, now=now()) is None

    assert time.monotonic() - started < 5
    assert inbox.waiting() == 0


def test_the_librarys_own_emulator_channel_cannot_receive_large_messages(
        publish, topic_and_subscription, pubsub_emulator, monkeypatch):
    """Why `subscriber_client` builds its own channel: with `PUBSUB_EMULATOR_HOST` the client
    library keeps gRPC's 4 MiB receive limit. If this starts passing, that can go."""
    publish(b"x" * (5 * 1024 * 1024))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    client = SubscriberClient()
    try:
        with pytest.raises(ResourceExhausted):
            client.pull(subscription=topic_and_subscription[1], max_messages=1, timeout=10,
                        retry=None)
    finally:
        client.close()
