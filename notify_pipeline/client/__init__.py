"""The notify client: send email through the notify pipeline from any Python service.

    from notify_pipeline.client import Session
    session = Session("lookup-notices", "pubsub://projects/P/topics/notify-inbox")
    session.send(to="alice@example.org", subject="Hello", text="Hi there")

Installed by the distribution's base install, without Dagster or any other server
dependency. `MockSession` stands in for `Session` in a service's tests; the Django email
backend is `notify_pipeline.client.django.EmailBackend`.
"""

from notify_pipeline.client.errors import (
    ClientError,
    ConfigError,
    IdentityUnavailable,
    InboxUnavailable,
    InvalidRequest,
    Unavailable,
)
from notify_pipeline.client.mock import MockSession
from notify_pipeline.client.session import Session

__all__ = [
    "ClientError",
    "ConfigError",
    "IdentityUnavailable",
    "InboxUnavailable",
    "InvalidRequest",
    "MockSession",
    "Session",
    "Unavailable",
]
