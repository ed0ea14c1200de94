"""One SNS notification body, verified and normalised, whatever carried it (SQS, an HTTP push).

`take` sorts each body into: events to record, dropped for good (forged, ignored, unreadable:
they will never become useful, so the carrier may discard them), or kept for later (the signing
certificate could not be fetched now). Forged bodies are logged by reason only, never by content.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from notify_pipeline.events import Event
from notify_pipeline.ledger.base import Ledger, Suppression
from notify_pipeline.provider_events.ses import MalformedEvent, Normalised, normalise
from notify_pipeline.provider_events.sns import (
    CertificateUnavailable,
    SnsVerifier,
    UntrustedNotification,
)

logger = logging.getLogger(__name__)


class Fate(Enum):
    DONE = "done"  # recorded, or worthless for good: the carrier may delete it
    RETRY = "retry"  # keep it: the carrier should deliver it again later


@dataclass
class IntakeSummary:
    """Counts for run metadata and the `notify process` summary."""

    received: int = 0
    events: int = 0
    suppressions: int = 0
    forged: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    retry_later: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "events": self.events,
            "suppressions": self.suppressions,
            "forged": dict(sorted(self.forged.items())),
            "ignored": dict(sorted(self.ignored.items())),
            "retry_later": self.retry_later,
        }


@dataclass
class Intake:
    """Verifies and normalises bodies, collecting their rows until `record` writes them."""

    verifier: SnsVerifier
    suppress_for: timedelta
    summary: IntakeSummary = field(default_factory=IntakeSummary)
    events: list[Event] = field(default_factory=list)
    suppressions: list[Suppression] = field(default_factory=list)

    def take(self, body: str | bytes, *, carrier_id: str = "") -> Fate:
        """Verify and normalise one body; `carrier_id` (e.g. the SQS message id) is for logs."""
        self.summary.received += 1
        try:
            normalised = self._read(body)
        except UntrustedNotification as e:
            self.summary.forged[e.reason.value] += 1
            logger.warning("refused SNS message %s: %s", carrier_id, e.reason.value)
            return Fate.DONE
        except CertificateUnavailable as e:
            self.summary.retry_later += 1
            logger.warning("SNS message %s kept for later: %s", carrier_id, e)
            return Fate.RETRY
        except MalformedEvent as e:
            self.summary.ignored["malformed"] += 1
            logger.warning("unreadable SES record in SNS message %s: %s", carrier_id, e)
            return Fate.DONE
        if normalised.ignored:
            self.summary.ignored[normalised.ignored] += 1
        self.events.extend(normalised.events)
        self.suppressions.extend(normalised.suppressions)
        return Fate.DONE

    def record(self, ledger: Ledger) -> None:
        """Write what was collected, events with their suppressions, in one transaction."""
        if self.events or self.suppressions:
            ledger.add_events(self.events, self.suppressions)
        self.summary.events += len(self.events)
        self.summary.suppressions += len(self.suppressions)
        self.events, self.suppressions = [], []

    def _read(self, body: str | bytes) -> Normalised:
        envelope = self.verifier.verify(body)
        if envelope.type != "Notification":
            # SNS → SQS in one account needs no confirmation; anywhere else an operator does it.
            logger.warning("SNS %s for %s: confirm at %s", envelope.type, envelope.topic_arn,
                           envelope.subscribe_url)
            return Normalised(ignored=envelope.type)
        try:
            record = json.loads(envelope.message)
        except ValueError as e:
            raise MalformedEvent("SNS Message is not JSON") from e
        return normalise(record, suppress_for=self.suppress_for)


def record_push(
    body: str | bytes, *, verifier: SnsVerifier, ledger: Ledger, suppress_for: timedelta
) -> tuple[Fate, IntakeSummary]:
    """For an HTTP push (SNS → HTTPS, or SNS → Pub/Sub push): verify, normalise, record.

    Answer the pusher with success for `Fate.DONE` and with a 5xx for `Fate.RETRY`, so that SNS
    (or Pub/Sub) delivers it again later.
    """
    intake = Intake(verifier, suppress_for)
    fate = intake.take(body)
    intake.record(ledger)
    return fate, intake.summary
