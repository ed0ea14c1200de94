"""Why a credential operation or a submitted message was refused, as reason codes."""

from __future__ import annotations

from enum import StrEnum

from notify_pipeline.errors import NotifyError


class SubmissionReason(StrEnum):
    """A closed vocabulary: each code maps to one SMTP reply (see `server.REPLY_FOR`)."""

    UNKNOWN_SERVICE = "unknown_service"
    SMTP_NOT_ENABLED = "smtp_not_enabled"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    SENDER_NOT_ALLOWED = "sender_not_allowed"
    RECIPIENT_NOT_ALLOWED = "recipient_not_allowed"
    REPLY_TO_NOT_ENABLED = "reply_to_not_enabled"
    INVALID_MESSAGE = "invalid_message"
    TOO_LARGE = "too_large"


class SubmissionError(NotifyError):
    """A refused credential operation or message; `reason` says which rule, the text why."""

    def __init__(self, reason: SubmissionReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class CredentialError(SubmissionError):
    """`notify smtp-credentials` cannot do what was asked (unknown service, not enabled...)."""


class MessageRefused(SubmissionError):
    """A submitted message the service may not send; answered with a 5xx reply."""
