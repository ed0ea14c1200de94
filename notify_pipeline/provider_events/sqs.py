"""SES events from an SQS queue subscribed to the SES event topic (SNS → SQS).

Raw message delivery must be OFF on the subscription: the body is then the signed SNS envelope,
which is what lets us verify it (and moto loses raw-delivered messages anyway).

Per received batch: verify and normalise every message, record all their events and
suppressions in one ledger transaction, and only then delete the messages. A crash in between
redelivers the batch; its events keep their ids, so the warehouse stores them once. Forged
messages are deleted (they will never verify); messages whose certificate could not be fetched are
left for SQS to deliver again after the visibility timeout.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from notify_pipeline import aws
from notify_pipeline.defaults import SQS_WAIT_SECONDS
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.provider_events.intake import Fate, Intake, IntakeSummary
from notify_pipeline.provider_events.sns import SnsVerifier

logger = logging.getLogger(__name__)

_MAX_WAIT_SECONDS = 5  # long polls longer than this would hold a sensor tick hostage


class SqsClient(Protocol):
    """The calls we make on a boto3 `sqs` client."""

    def receive_message(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]: ...


def sqs_client(
    *,
    region: str,
    wait_seconds: int = SQS_WAIT_SECONDS,
    endpoint_url: str | None = None,
    connect_timeout: float = 5.0,
    max_attempts: int = 3,
) -> SqsClient:
    """A boto3 `sqs` client whose read timeout outlasts a `wait_seconds` long poll.

    Receiving and deleting are safe to repeat, so botocore's bounded retries are kept. The
    client is thread-safe and may serve every source of a process.
    """
    client: SqsClient = aws.client(
        "sqs", region=region, endpoint_url=endpoint_url, connect_timeout=connect_timeout,
        read_timeout=wait_seconds + 10, max_attempts=max_attempts,
    )
    return client


class SqsEventSource:
    """Reads SES event notifications from one queue into the ledger."""

    def __init__(
        self,
        *,
        client: SqsClient,
        queue_url: str,
        verifier: SnsVerifier,
        ledger: Ledger,
        suppress_for: timedelta,
        wait_seconds: int = SQS_WAIT_SECONDS,
        max_messages: int = 10,
    ) -> None:
        if not 0 <= wait_seconds <= _MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be within 0..{_MAX_WAIT_SECONDS}")
        if not 1 <= max_messages <= 10:
            raise ValueError("max_messages must be within 1..10 (SQS's limit)")
        self.queue_url = queue_url
        self.wait_seconds, self.max_messages = wait_seconds, max_messages
        self.client, self.verifier, self._ledger = client, verifier, ledger
        self._suppress_for = suppress_for

    @classmethod
    def from_config(cls, *, region: str, endpoint_url: str | None = None,
                    **kwargs: Any) -> SqsEventSource:
        """A source with a client of its own (see `sqs_client`)."""
        client = sqs_client(region=region, endpoint_url=endpoint_url,
                            wait_seconds=int(kwargs.get("wait_seconds", SQS_WAIT_SECONDS)))
        return cls(client=client, **kwargs)

    def drain(self, *, max_batches: int = 50) -> IntakeSummary:
        """Poll until the queue answers empty or `max_batches` batches (of up to 10) were taken."""
        intake = Intake(self.verifier, self._suppress_for)
        for _ in range(max_batches):
            if not self._poll(intake):
                break
        return intake.summary

    def _poll(self, intake: Intake) -> int:
        """One receive → verify → record → delete round; returns how many messages came."""
        response = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_seconds,
        )
        messages = response.get("Messages", [])
        done = [
            {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
            for index, m in enumerate(messages)
            if intake.take(m["Body"], carrier_id=m["MessageId"]) is Fate.DONE
        ]
        intake.record(self._ledger)
        if done:
            self._delete(done)
        return len(messages)

    def _delete(self, entries: list[dict[str, str]]) -> None:
        """A message whose delete failed comes back; its events dedupe by id."""
        response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failure in response.get("Failed", []):
            logger.warning("SQS delete failed for entry %s: %s", failure.get("Id"),
                           failure.get("Code"))
