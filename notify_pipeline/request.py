"""The send request wire format, version 1 (`docs/send-request.md`), its strict parser, and the
best-effort readings of a request that did not parse (attribution, redaction)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from notify_pipeline.defaults import MAX_REQUEST_BYTES
from notify_pipeline.errors import RejectReason, RequestRejected

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
FROM_DOMAIN_PATTERN = (
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)

TagKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
TagValue = Annotated[str, Field(max_length=256)]


class RequestAttachment(BaseModel):
    """One attachment, its content base64-encoded on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
    content_base64: str = Field(repr=False)

    @field_validator("content_base64")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("is not valid base64") from exc
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.content_base64, validate=True)


class SendRequest(BaseModel):
    """A send request. Unknown fields are an error; the identity token never appears in repr."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1]
    id: str = Field(pattern=REQUEST_ID_PATTERN)
    service: str = Field(min_length=1, max_length=63)
    identity_token: str | None = Field(default=None, repr=False)  # absent: unauthenticated
    from_tag: str | None = None
    # One of the service's `advanced.custom_domains` to send from; absent: its usual domain.
    from_domain: str | None = Field(default=None, pattern=FROM_DOMAIN_PATTERN, max_length=253)
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    subject: str = Field(max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: tuple[RequestAttachment, ...] = ()
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)

    @field_validator("version", mode="before")
    @classmethod
    def _is_an_integer(cls, value: Any) -> Any:
        """`Literal[1]` alone lets `true` and `1.0` through, since both equal 1."""
        if type(value) is not int:
            raise ValueError("must be the integer 1")
        return value

    @model_validator(mode="after")
    def _has_body_and_recipient(self) -> SendRequest:
        if self.text is None and self.html is None:
            raise ValueError("at least one of text or html is required")
        if not (self.to or self.cc or self.bcc):
            raise ValueError("at least one recipient (to, cc or bcc) is required")
        return self

    @property
    def recipients(self) -> tuple[str, ...]:
        return (*self.to, *self.cc, *self.bcc)


def parse_request(body: bytes, *, max_bytes: int = MAX_REQUEST_BYTES) -> SendRequest:
    """Parse and validate one request, or raise `RequestRejected` (too_large / malformed).

    Error sentences name fields and problems but never echo values: the token is a secret.
    """
    if len(body) > max_bytes:
        raise RequestRejected(
            RejectReason.TOO_LARGE, f"request is {len(body)} bytes; the limit is {max_bytes}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejected(RejectReason.MALFORMED, f"not UTF-8 (byte {exc.start})") from None
    try:
        return SendRequest.model_validate_json(text)
    except ValidationError as exc:
        raise RequestRejected(RejectReason.MALFORMED, describe_errors(exc)) from None


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """A compact sentence listing field paths and problems, without the offending values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True)
class Attribution:
    """What can be read of a request that failed to parse: for its reject rows, best effort."""

    service: str | None = None
    message_id: str | None = None
    recipients: tuple[str, ...] = ()


def peek(body: bytes) -> Attribution:
    """Best-effort (service, id, recipients) of an unparseable request, read in one pass."""
    data = _json_object(body)
    if data is None:
        return Attribution()
    service, request_id = data.get("service"), data.get("id")
    found: list[str] = []
    for name in ("to", "cc", "bcc"):
        value = data.get(name)
        if isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str) and len(v) <= 320)
    return Attribution(
        service if isinstance(service, str) and len(service) <= 63 else None,
        request_id if isinstance(request_id, str) and len(request_id) <= 128 else None,
        tuple(found),
    )


def redact_token(body: bytes) -> bytes:
    """The request with `identity_token` replaced, or a placeholder if it is not a JSON object:
    what may be kept of a request once it has been processed (tokens are secrets)."""
    data = _json_object(body)
    if data is None:
        return b'"<request withheld: not a JSON object, it may contain a token>"'
    if "identity_token" in data:
        data["identity_token"] = "<redacted>"  # noqa: S105 - a placeholder, not a secret
    return json.dumps(data, indent=2).encode()


def _json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None when it is not UTF-8 JSON or not an object.

    pydantic-core's parser answers any input (deep nesting, huge numbers, bad escapes) with a
    `ValueError`, where the standard library's raises `RecursionError` or worse.
    """
    try:
        data: Any = pydantic_core.from_json(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
