"""Turning `send` arguments into a wire-format request, checked as the pipeline will check it.

Validation is the shared wire model (`notify_pipeline.request.SendRequest`) plus the
registry-free policy checks (`notify_pipeline.request_checks`), run on the exact bytes that
will be written, so a request the client accepts is one the pipeline can parse.
"""

from __future__ import annotations

import base64
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from notify_pipeline.client.errors import InvalidRequest
from notify_pipeline.defaults import MAX_REQUEST_BYTES
from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.request import SendRequest, describe_errors
from notify_pipeline.request_checks import (
    FieldRejected,
    check_addresses,
    check_headers,
    check_injection,
)

Addresses = str | Sequence[str]
Attachment = tuple[str, bytes, str]

# Stands in for the token while a request is checked before one is fetched: as long as a
# typical Google ID token, so the size check is close to the final one.
TOKEN_PLACEHOLDER = "x" * 1200
_WIRE_TO_ARGUMENT = {"id": "idempotency_key", "content_base64": "content"}


def build(
    service: str,
    *,
    to: Addresses,
    subject: str,
    text: str | None = None,
    html: str | None = None,
    cc: Addresses = (),
    bcc: Addresses = (),
    reply_to: Addresses = (),
    headers: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    attachments: Iterable[Attachment] = (),
    idempotency_key: str | None = None,
    from_tag: str | None = None,
    from_domain: str | None = None,
) -> dict[str, Any]:
    """The request as a wire-format dict without `identity_token`; raises `InvalidRequest`."""
    wire: dict[str, Any] = {
        "version": 1,
        "id": uuid.uuid4().hex if idempotency_key is None else idempotency_key,
        "service": service,
        "to": _addresses("to", to),
        "cc": _addresses("cc", cc),
        "bcc": _addresses("bcc", bcc),
        "reply_to": _addresses("reply_to", reply_to),
        "subject": subject,
        "headers": dict(headers or {}),
        "tags": dict(tags or {}),
        "attachments": _attachments(attachments),
    }
    optional = (("text", text), ("html", html), ("from_tag", from_tag),
                ("from_domain", from_domain))
    for name, value in optional:
        if value is not None:
            wire[name] = value
    encode(wire, TOKEN_PLACEHOLDER)
    return wire


class Sender(ABC):
    """What `Session` and `MockSession` share: `send` builds and checks one request,
    `send_wire` puts it where it goes."""

    service: str

    def send(
        self,
        *,
        to: Addresses,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        cc: Addresses = (),
        bcc: Addresses = (),
        reply_to: Addresses = (),
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        attachments: Iterable[Attachment] = (),
        idempotency_key: str | None = None,
        from_tag: str | None = None,
        from_domain: str | None = None,
    ) -> str:
        """Send one request and return its id (`idempotency_key`, else a random one).

        Raises `InvalidRequest` (a `ValueError`; nothing written) for a request the pipeline
        would refuse whatever the service, `InboxUnavailable` / `IdentityUnavailable` once the
        retries are spent, `ConfigError` for a setting to fix. Sending the same
        `idempotency_key` again is safe: the pipeline delivers it once.
        """
        wire = build(
            self.service, to=to, subject=subject, text=text, html=html, cc=cc, bcc=bcc,
            reply_to=reply_to, headers=headers, tags=tags, attachments=attachments,
            idempotency_key=idempotency_key, from_tag=from_tag, from_domain=from_domain,
        )
        self.send_wire(wire)
        return str(wire["id"])

    @abstractmethod
    def send_wire(self, wire: Mapping[str, Any]) -> str:
        """Deliver a request built by `build`; returns where it went."""


def encode(wire: Mapping[str, Any], token: str) -> bytes:
    """The bytes to write, once they pass every check the pipeline makes without its registry."""
    try:
        body = json.dumps({**wire, "identity_token": token}, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest("request", RejectReason.MALFORMED,
                             "holds text that is not valid Unicode (a lone surrogate)") from None
    except TypeError as exc:  # a value JSON cannot hold, e.g. a number as a header value
        raise InvalidRequest("request", RejectReason.MALFORMED, str(exc)) from None
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidRequest("attachments", RejectReason.TOO_LARGE,
                             f"the request is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        request = SendRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(_field(exc), RejectReason.MALFORMED, _problem(exc)) from None
    try:
        check_injection(request)
        check_headers(request.headers)
        check_addresses(request)
    except FieldRejected as exc:
        raise InvalidRequest(exc.field, exc.reason, exc.message) from None
    except RequestRejected as exc:
        raise InvalidRequest("request", exc.reason, exc.message) from None
    return body


def _addresses(name: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence | set | frozenset):
        raise InvalidRequest(name, RejectReason.MALFORMED,
                             "must be an address or a sequence of addresses")
    found = list(value)
    for i, item in enumerate(found):
        if not isinstance(item, str):
            raise InvalidRequest(f"{name}[{i}]", RejectReason.MALFORMED, "must be a string")
    return found


def _attachments(value: Iterable[Attachment]) -> list[dict[str, str]]:
    found = []
    for i, item in enumerate(value):
        if not (isinstance(item, tuple | list) and len(item) == 3):
            raise InvalidRequest(f"attachments[{i}]", RejectReason.MALFORMED,
                                 "must be a (filename, content, content_type) tuple")
        filename, content, content_type = item
        if not isinstance(content, bytes | bytearray | memoryview):
            raise InvalidRequest(f"attachments[{i}].content", RejectReason.MALFORMED,
                                 "must be bytes")
        found.append({"filename": filename, "content_type": content_type,
                      "content_base64": base64.b64encode(content).decode("ascii")})
    return found


def _problem(exc: ValidationError) -> str:
    """The first problem in words (never the value), and the others in brief."""
    first = exc.errors(include_input=False, include_url=False)[0]["msg"]
    more = exc.error_count() - 1
    return first.removeprefix("Value error, ") + (
        f" (and {more} more: {describe_errors(exc)})" if more else "")


def _field(exc: ValidationError) -> str:
    """The `send` argument the first error is about, e.g. `to[0]` or `idempotency_key`."""
    error = exc.errors(include_input=False, include_url=False)[0]
    loc = [_WIRE_TO_ARGUMENT.get(str(p), str(p)) if isinstance(p, str) else p
           for p in error["loc"]]
    if not loc:  # a whole-request rule
        return "to" if "recipient" in error["msg"] else "text"
    field = str(loc[0])
    for part in loc[1:]:
        field += f"[{part}]" if isinstance(part, int) else f".{part}"
    return field
