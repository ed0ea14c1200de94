"""The Pub/Sub inbox: requests are messages read through a pull subscription.

A stage pulls up to `max_items` messages with the synchronous pull API (a sensor tick must not
hold a streaming pull open). If the size/age bound is not met it gives them all back at once
(ack deadline 0) rather than holding them; otherwise it writes each into the GCS batch store
(key: `message_id`, receive time: `publish_time`) and only then acknowledges them.

Nothing is acknowledged before it is durably staged. A stager that dies before its ack leaves
the messages to come back after their ack deadline; they are staged again into a new batch and
the delivery ledger sends only one copy (a redelivery keeps its `message_id`, so the ledger sees
a re-run of the same item, not a client's `duplicate`). The batch id digests each delivery's ack
id as well as its message id, so a redelivery never reuses the id, and so the spent run key, of
a batch that a run may already have finished. Ordering keys are not relied on.

Each give-back counts as a delivery attempt: a dead-letter policy on the subscription must allow
more attempts than the batching bounds can cause.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import grpc
from google.api_core.exceptions import (
    Aborted,
    DeadlineExceeded,
    GoogleAPICallError,
    InternalServerError,
    ServiceUnavailable,
    Unknown,
)
from google.api_core.retry import Retry, if_exception_type
from google.cloud.pubsub_v1 import SubscriberClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import PubsubMessage, ReceivedMessage

from notify_pipeline.inbox.gcs_store import (
    CallLimits,
    GcsBatchStore,
    GcsStagedInbox,
    bound_met,
    make_batch_id,
)

log = logging.getLogger(__name__)

ACK_IDS_PER_CALL = 1000  # well inside Pub/Sub's 512 KB request limit
MAX_PULL = 1000  # Pub/Sub's cap on `max_messages`
_TRANSIENT = if_exception_type(ServiceUnavailable, InternalServerError, Aborted, Unknown)


def subscriber_client(*, emulator_host: str | None = None) -> SubscriberClient:
    """A subscriber for Google, or for an emulator at `emulator_host` (HOST:PORT).

    The library's own emulator channel (chosen by `PUBSUB_EMULATOR_HOST`) keeps gRPC's 4 MiB
    receive limit, below Pub/Sub's 10 MB messages; this channel has the production limits.
    """
    if emulator_host is None:
        return SubscriberClient()
    channel = grpc.insecure_channel(
        emulator_host,
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def publish_time(message: PubsubMessage) -> datetime:
    """proto-plus hands `publish_time` out as an aware datetime, though it is typed a Timestamp."""
    value: Any = message.publish_time
    return cast(datetime, value)


class PubSubInbox(GcsStagedInbox):
    """Requests pulled from `subscription` (`projects/P/subscriptions/S`), staged into `store`.

    A stage pulls in rounds of `pull_chunk` and stops early once `max_batch_bytes` are held,
    which also counts as a full batch: memory stays near that bound whatever `max_items` is.
    `lease_seconds` is the ack deadline set on a batch while it is written.
    """

    def __init__(
        self,
        subscriber: SubscriberClient,
        subscription: str,
        store: GcsBatchStore,
        *,
        pull_chunk: int = 100,
        max_batch_bytes: int = 64 * 1024 * 1024,
        pull_timeout_seconds: float = 2.0,
        lease_seconds: int = 120,
        limits: CallLimits | None = None,
    ) -> None:
        super().__init__(store)
        self.subscriber, self.subscription = subscriber, subscription
        self.pull_chunk = min(pull_chunk, MAX_PULL)
        self.max_batch_bytes = max_batch_bytes
        self.pull_timeout_seconds, self.lease_seconds = pull_timeout_seconds, lease_seconds
        self.limits = limits or CallLimits()
        self._given_back = 0

    def stage(self, *, max_items: int, max_age_seconds: float, now: datetime) -> str | None:
        self._seal_stale(now)
        received = self._pull(max_items)
        ack_ids = [m.ack_id for m in received]
        self._given_back = 0
        if not received:
            return None
        if not self._ready(received, max_items, max_age_seconds, now):
            self._set_deadline(ack_ids, 0)  # back at once, for the next stage to pull again
            self._given_back = len(received)
            return None
        self._set_deadline(ack_ids, self.lease_seconds)  # cover the writes below
        batch_id = self._write(received)
        try:
            self._acknowledge(ack_ids)
        except GoogleAPICallError as exc:  # the batch is durable; redelivery is a duplicate
            log.warning("staged batch %s but could not acknowledge it: %s", batch_id, exc)
        return batch_id

    def _seal_stale(self, now: datetime) -> None:
        """Seal batches whose stager died while writing them.

        What it wrote is durable, and what it did not write was never acknowledged, so comes
        back: sealing is all that is left to do.
        """
        for batch_id in self.store.stale(now):
            self.store.seal(batch_id)

    def _pull(self, max_items: int) -> list[ReceivedMessage]:
        received: list[ReceivedMessage] = []
        size = 0
        while len(received) < max_items and size < self.max_batch_bytes:
            chunk = self._pull_once(min(self.pull_chunk, max_items - len(received)))
            if not chunk:
                break
            received += chunk
            size += sum(len(m.message.data) for m in chunk)
        return received

    def _pull_once(self, max_messages: int) -> list[ReceivedMessage]:
        """One synchronous pull; an empty subscription answers by running out the timeout."""
        try:
            response = self.subscriber.pull(
                subscription=self.subscription, max_messages=max_messages,
                timeout=self.pull_timeout_seconds, retry=self._retry(),
            )
        except DeadlineExceeded:
            return []
        return list(response.received_messages)

    def _ready(
        self, received: Sequence[ReceivedMessage], max_items: int, max_age_seconds: float,
        now: datetime,
    ) -> bool:
        held = sum(len(m.message.data) for m in received)
        oldest = min(publish_time(m.message) for m in received)
        return held >= self.max_batch_bytes or bound_met(
            count=len(received), oldest=oldest, max_items=max_items,
            max_age_seconds=max_age_seconds, now=now,
        )

    def _write(self, received: Sequence[ReceivedMessage]) -> str:
        oldest = min(publish_time(m.message) for m in received)
        batch_id = make_batch_id(oldest, (f"{m.message.message_id}#{m.ack_id}" for m in received))
        self.store.begin(batch_id, [{"message_id": m.message.message_id} for m in received])
        for m in received:
            self.store.put(batch_id, m.message.message_id, m.message.data, publish_time(m.message))
        self.store.seal(batch_id)
        return batch_id

    def _set_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        for chunk in _chunks(ack_ids):
            self.subscriber.modify_ack_deadline(
                subscription=self.subscription, ack_ids=chunk, ack_deadline_seconds=seconds,
                timeout=self.limits.timeout_seconds, retry=self._retry(),
            )

    def _acknowledge(self, ack_ids: Sequence[str]) -> None:
        for chunk in _chunks(ack_ids):
            self.subscriber.acknowledge(
                subscription=self.subscription, ack_ids=chunk,
                timeout=self.limits.timeout_seconds, retry=self._retry(),
            )

    def _retry(self) -> Retry:
        return Retry(
            predicate=_TRANSIENT, initial=0.2, maximum=5.0, timeout=self.limits.retry_seconds
        )

    def waiting(self) -> int:
        """Messages the last stage gave back: Pub/Sub has no cheap backlog count (Cloud
        Monitoring's `num_undelivered_messages` lags by minutes), so this is a lower bound."""
        return self._given_back


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), ACK_IDS_PER_CALL):
        yield list(items[start:start + ACK_IDS_PER_CALL])
