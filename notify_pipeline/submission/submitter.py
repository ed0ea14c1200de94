"""Where accepted messages go: a `Submitter` puts one send request on a service's inbox.

The client's `Session` is the `Submitter`: each accepted message is checked, signed and
written exactly as a service's own `Session.send` would be. Locally the token comes from the
local issuer, for the service's first registered account.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Protocol, TypedDict

from notify_pipeline.client.session import Session
from notify_pipeline.client.tokens import CachedToken
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.registry import Registry


class SendFields(TypedDict):
    """The keyword arguments of `Submitter.send` that one SMTP message turns into."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    tags: dict[str, str] | None
    attachments: tuple[tuple[str, bytes, str], ...]
    idempotency_key: str | None
    from_tag: str | None
    from_domain: str | None


class Submitter(Protocol):
    """What the server needs of the client's `Session`: send one request, return its id.

    Raises a `ValueError` (subclass) for a request that breaks the wire format, anything else
    when the inbox cannot take it now. Parameter types are the narrowest the server passes,
    so any `send` accepting wider ones satisfies this.
    """

    def send(
        self,
        *,
        to: tuple[str, ...],
        cc: tuple[str, ...],
        bcc: tuple[str, ...],
        reply_to: tuple[str, ...],
        subject: str,
        text: str | None,
        html: str | None,
        headers: dict[str, str],
        tags: dict[str, str] | None,
        attachments: tuple[tuple[str, bytes, str], ...],
        idempotency_key: str | None,
        from_tag: str | None,
        from_domain: str | None,
    ) -> str: ...


SubmitterFactory = Callable[[str], Submitter]


def local_submitters(
    *, inbox: LocalInbox, issuer: LocalIssuer, audience: str, registry: Callable[[], Registry]
) -> SubmitterFactory:
    """`submitter_for(service_id)` for the local profile: a client `Session` on the folder
    inbox per service, with tokens for the service's first account (one session per account,
    so its token is reused while it is fresh)."""
    sessions: dict[tuple[str, str], Session] = {}
    lock = threading.Lock()
    url = inbox.inbox_dir.resolve().as_uri()

    def submitter_for(service_id: str) -> Submitter:
        account = registry()[service_id].service_accounts[0]
        with lock:
            if (service_id, account) not in sessions:
                tokens = CachedToken(functools.partial(
                    issuer.mint, service_account=account, audience=audience))
                sessions[service_id, account] = Session(
                    service_id, url, audience=audience, token_source=tokens)
            return sessions[service_id, account]

    return submitter_for
