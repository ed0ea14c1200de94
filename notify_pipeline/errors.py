"""Error types and the closed vocabulary of reject reasons.

Errors are named for what the caller should do next (reject, retry, give up, fix configuration),
and carry a machine-readable reason code beside the human sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notify_pipeline.delivery.base import HandoffResult


class RejectReason(StrEnum):
    """Why a send request was refused (docs/send-request.md); the event `reason` column holds it."""

    MALFORMED = "malformed"
    UNKNOWN_SERVICE = "unknown_service"
    UNAUTHENTICATED = "unauthenticated"
    UNAUTHORISED = "unauthorised"
    RECIPIENT_NOT_ALLOWED = "recipient_not_allowed"
    HEADER_INJECTION = "header_injection"
    DISALLOWED_HEADER = "disallowed_header"
    REPLY_TO_NOT_ENABLED = "reply_to_not_enabled"
    TOO_LARGE = "too_large"
    SUPPRESSED = "suppressed"


class FailureReason(StrEnum):
    """Why a claimed message ended as a `failure` event. Stored in the event `reason` column;
    the human detail (the provider's answer, the exception) goes to the run log."""

    AMBIGUOUS_HANDOFF = "ambiguous_handoff"  # may have been delivered: never retried
    PROVIDER_REFUSED = "provider_refused"  # the provider refused the whole message
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # unreachable for every allowed attempt
    RENDER_FAILED = "render_failed"  # could not be rendered or signed
    RECIPIENT_FAILED = "recipient_failed"  # one recipient refused for good after retries


class DeferReason(StrEnum):
    """Why a request waits in its batch for a later attempt. Deferral is no event: it is counted
    in batch summaries (`deferred_by`), and the request ends in a terminal event later."""

    CLAIMED_ELSEWHERE = "claimed_elsewhere"  # another live run holds the message
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # handed back for a retry
    RECIPIENTS_DEFERRED = "recipients_deferred"  # every recipient refused for now (4xx at RCPT)
    PER_MINUTE = "per_minute"  # over its service's per-minute limit
    PER_DAY = "per_day"  # over its service's per-day limit
    WARMUP = "warmup"  # over its dedicated IP pool's warm-up cap for the day


class SuppressionReason(StrEnum):
    """Why an address is on the suppression list (the ledger's `reason`)."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"


class NotifyError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(NotifyError, ValueError):
    """The deployment is misconfigured; `setting` names what to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class ConfigErrors(NotifyError, ValueError):
    """Every configuration problem found at once, one `ConfigError` (one sentence) each."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


class RequestRejected(NotifyError):
    """A send request breaks the wire format or the service's policy. Never retried."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class DeliveryError(NotifyError):
    """Base of errors raised by a transport while handing a message to a provider."""


class RetryableDeliveryError(DeliveryError):
    """Nothing was handed off and trying again later may succeed (4xx, connection refused)."""


class RecipientsDeferredError(DeliveryError):
    """Nothing was handed off: the server refused every recipient for now (4xx at RCPT, as a
    greylisting server does), so only this message waits for a later attempt; the provider
    itself is fine. `result` holds the refusals, which stand on the message's last attempt."""

    def __init__(self, message: str, result: HandoffResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[type[RecipientsDeferredError], tuple[str, HandoffResult]]:
        return type(self), (str(self), self.result)  # survives the hand-off process's pipe


class PermanentDeliveryError(DeliveryError):
    """Nothing was handed off and there is no point in retrying (invalid parameters)."""


class AmbiguousHandoffError(DeliveryError):
    """The provider may or may not have accepted the message; retrying could deliver it twice."""
