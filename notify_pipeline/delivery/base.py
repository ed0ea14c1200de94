"""The small interface every transport implements, and the result it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class RecipientStatus(StrEnum):
    ACCEPTED = "accepted"  # the provider took responsibility for this recipient
    BOUNCED = "bounced"  # permanently refused (SMTP 5xx)
    FAILED = "failed"  # temporarily refused and retries were exhausted (SMTP 4xx)


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered, signed message ready for hand-off."""

    service: str
    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    ip_pool: str | None = None  # the service's dedicated IP pool (a provider that has them)


@dataclass(frozen=True)
class RecipientOutcome:
    recipient: str
    status: RecipientStatus
    code: int | None = None
    diagnostic: str = ""


@dataclass(frozen=True)
class HandoffResult:
    """What the provider said: its id for the message and one outcome per envelope recipient."""

    provider_message_id: str | None
    outcomes: tuple[RecipientOutcome, ...]

    @classmethod
    def all_accepted(cls, provider_message_id: str, recipients: Iterable[str]) -> HandoffResult:
        """A provider that takes a message takes it for every recipient at once (SES)."""
        return cls(provider_message_id,
                   tuple(RecipientOutcome(r, RecipientStatus.ACCEPTED) for r in recipients))


class Transport(ABC):
    """Hands messages to one provider.

    `reports_delivery` is true when acceptance by the provider is the final delivery (a local SMTP
    sink); false when the provider reports delivery later through its own events (Amazon SES).
    `concurrency` is how many `send` calls may run at once, from different threads.
    """

    reports_delivery: bool = True
    concurrency: int = 1

    @abstractmethod
    def send(self, message: OutgoingMessage) -> HandoffResult:
        """Hand one message off, retrying transient trouble within bounds.

        Raises `RetryableDeliveryError` when nothing was handed off and retries are exhausted,
        `PermanentDeliveryError` when nothing was handed off and retrying is pointless,
        `RecipientsDeferredError` when nothing was handed off because every recipient was
        refused for now, and `AmbiguousHandoffError` when the provider may have accepted it.
        """

    def close(self) -> None:  # noqa: B027 - transports without connections need nothing
        """Release connections. Safe to call more than once."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
