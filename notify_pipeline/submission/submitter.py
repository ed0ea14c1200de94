"""Where accepted messages go: a `Submitter` puts one send request on a service's inbox.

The client's `Session` is a `Submitter`. Until the server side uses it, `LocalInboxSubmitter`
does the same for the local profile's folder inbox: a version 1 request with a token from the
local issuer, validated by the pipeline's own parser before it is written.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.registry import Registry
from notify_pipeline.request import parse_request


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
    ) -> str: ...


SubmitterFactory = Callable[[str], Submitter]


class InvalidSubmission(ValueError):
    """The request breaks the wire format (`reason` is `malformed` or `too_large`)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LocalInboxSubmitter:
    """Writes requests for one service into the local folder inbox."""

    def __init__(
        self, service: str, *, inbox: LocalInbox, issuer: LocalIssuer, service_account: str,
        audience: str,
    ) -> None:
        self.service = service
        self._inbox = inbox
        self._issuer = issuer
        self._service_account = service_account
        self._audience = audience

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
    ) -> str:
        request_id = idempotency_key or secrets.token_hex(16)
        request: dict[str, Any] = {
            "version": 1, "id": request_id, "service": self.service,
            "identity_token": self._issuer.mint(service_account=self._service_account,
                                                audience=self._audience),
            "to": list(to), "cc": list(cc), "bcc": list(bcc), "reply_to": list(reply_to),
            "subject": subject, "headers": headers, "tags": tags or {},
            "attachments": [
                {"filename": name, "content_type": content_type,
                 "content_base64": base64.b64encode(content).decode("ascii")}
                for name, content, content_type in attachments
            ],
        }
        optional = {"text": text, "html": html, "from_tag": from_tag}
        request.update({k: v for k, v in optional.items() if v is not None})
        body = json.dumps(request).encode()
        try:
            parse_request(body)
        except RequestRejected as exc:
            raise InvalidSubmission(exc.reason, exc.message) from None
        # A file of its own even for a retried id, so the pipeline counts a retry as a duplicate
        # request rather than as the same inbox item seen again.
        name = f"{self.service}--{request_id}--{secrets.token_hex(4)}.json"
        self._inbox.write_request(body, name)
        return request_id


def local_submitters(
    *, inbox: LocalInbox, issuer: LocalIssuer, audience: str, registry: Callable[[], Registry]
) -> SubmitterFactory:
    """`submitter_for(service_id)` for the local profile: tokens for the service's first account."""

    def submitter_for(service_id: str) -> Submitter:
        account = registry()[service_id].service_accounts[0]
        return LocalInboxSubmitter(service_id, inbox=inbox, issuer=issuer,
                                   service_account=account, audience=audience)

    return submitter_for
