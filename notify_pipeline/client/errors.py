"""What the client raises: a bad request, an unavailable inbox or identity, a configuration fault.

Each is a type with a code to branch on; none carries an identity token or a request body.
"""

from __future__ import annotations

from notify_pipeline.errors import ConfigError, NotifyError, RejectReason

__all__ = ["ClientError", "ConfigError", "IdentityUnavailable", "InboxUnavailable",
           "InvalidRequest", "Unavailable"]


class ClientError(NotifyError):
    """Base of the errors the client raises on purpose (besides `ConfigError`)."""


class InvalidRequest(ClientError, ValueError):
    """The request breaks the wire format or a rule every service obeys; nothing was written.

    `field` names the `send` argument at fault (`to[0]`, `attachments[1].content_type`,
    `idempotency_key`...) and `reason` is the reject reason the pipeline would have given.
    """

    def __init__(self, field: str, reason: RejectReason, message: str) -> None:
        super().__init__(f"{field}: {message}" if not message.startswith(field) else message)
        self.field = field
        self.reason = reason


class Unavailable(ClientError):
    """Nothing was written and trying again later may succeed."""


class InboxUnavailable(Unavailable):
    """The inbox refused or did not answer, after the client's own bounded retries."""

    def __init__(self, inbox: str, message: str) -> None:
        super().__init__(f"inbox {inbox} is unavailable: {message}")
        self.inbox = inbox


class IdentityUnavailable(Unavailable):
    """No identity token could be obtained (the metadata server or token endpoint failed)."""
