"""One submitted RFC 5322 message → the fields of one send request.

The envelope decides who receives the message; the To and Cc headers only say which of those
recipients are shown there, and every other envelope recipient becomes a Bcc. Headers the
pipeline sets itself (From, Date, Message-ID, DKIM-Signature, the MIME structure, trace
headers...) are dropped; the Message-ID becomes the idempotency key, so a client re-sending
after a lost reply does not deliver twice.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterator, Sequence
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser

from notify_pipeline.policy import Domains
from notify_pipeline.registry import Service
from notify_pipeline.request_checks import DISALLOWED_HEADERS, DISALLOWED_PREFIXES
from notify_pipeline.submission.errors import MessageRefused, SubmissionReason
from notify_pipeline.submission.sender import Sender, sender_of
from notify_pipeline.submission.submitter import SendFields

# Read from the message into request fields rather than copied as headers.
_CONSUMED = frozenset({"from", "to", "cc", "bcc", "reply-to", "subject", "message-id"})
_FOLD = re.compile(r"\r?\n[ \t]*")
IDEMPOTENCY_PREFIX = "smtp-"


def message_fields(
    raw: bytes, *, service: Service, domains: Domains, mail_from: str, recipients: Sequence[str]
) -> SendFields:
    """The request fields, or `MessageRefused` when the service may not send this message."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # what policy.default parses into
    sender = _sender(message, service, domains, mail_from)
    reply_to = _addresses(message, "reply-to")
    if reply_to and not service.advanced.reply_to:
        raise MessageRefused(
            SubmissionReason.REPLY_TO_NOT_ENABLED,
            f"service {service.id!r} has not enabled the advanced reply_to option",
        )
    to, cc, bcc = _split_recipients(message, recipients)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return SendFields(
        to=to, cc=cc, bcc=bcc, reply_to=reply_to,
        subject=_unfold(str(message.get("subject", ""))),
        text=_text(text_part), html=_text(html_part),
        headers=_extra_headers(message),
        tags=None,
        attachments=tuple(_attachments(message, skip=(text_part, html_part))),
        idempotency_key=idempotency_key(message.get("message-id")),
        from_tag=sender.tag,
        from_domain=sender.domain,
    )


def idempotency_key(message_id: object) -> str | None:
    """A request id derived from the Message-ID: the same message always gets the same id."""
    if message_id is None or not str(message_id).strip():
        return None
    digest = hashlib.sha256(str(message_id).strip().encode("utf-8", "surrogateescape"))
    return IDEMPOTENCY_PREFIX + digest.hexdigest()[:40]


def _sender(
    message: EmailMessage, service: Service, domains: Domains, mail_from: str
) -> Sender:
    """The From header's tag and domain (the envelope sender's when there is no From header).

    Both the envelope sender and the From header must be the service's own addresses.
    """
    envelope = sender_of(service, domains, mail_from)
    if "from" not in message:
        return envelope
    senders = _addresses(message, "from")
    if len(senders) != 1:
        raise MessageRefused(SubmissionReason.SENDER_NOT_ALLOWED,
                             "the From header must hold exactly one address")
    return sender_of(service, domains, senders[0])


def _addresses(message: EmailMessage, name: str) -> tuple[str, ...]:
    found: list[str] = []
    for header in message.get_all(name) or ():
        addresses: tuple[Address, ...] = getattr(header, "addresses", ())
        found += [a.addr_spec for a in addresses if a.addr_spec and "@" in a.addr_spec]
    return tuple(found)


def _split_recipients(
    message: EmailMessage, recipients: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(to, cc, bcc), each an envelope recipient, each recipient exactly once."""
    remaining = {r.lower(): r for r in recipients}

    def take(header: str) -> tuple[str, ...]:
        shown = [remaining.pop(a.lower()) for a in _addresses(message, header)
                 if a.lower() in remaining]
        return tuple(shown)

    to, cc = take("to"), take("cc")
    return to, cc, tuple(remaining.values())


def _text(part: Message | None) -> str | None:
    if part is None:
        return None
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _extra_headers(message: EmailMessage) -> dict[str, str]:
    """Every header a caller may set; one the pipeline sets itself is dropped."""
    headers: dict[str, str] = {}
    for name, value in message.items():
        lowered = name.lower()
        if (lowered in _CONSUMED or lowered in DISALLOWED_HEADERS
                or lowered.startswith(DISALLOWED_PREFIXES)):
            continue
        if any(existing.lower() == lowered for existing in headers):
            raise MessageRefused(SubmissionReason.INVALID_MESSAGE,
                                 f"the {name} header is given more than once")
        headers[name] = _unfold(str(value))
    return headers


def _attachments(
    message: EmailMessage, *, skip: tuple[Message | None, ...]
) -> Iterator[tuple[str, bytes, str]]:
    """Every leaf part but the two bodies, as (filename, content, content type).

    An attached message (message/rfc822) is one attachment, not its parts; inline parts (an
    HTML body's images) become attachments, as the send request has no inline parts.
    """
    for number, part in enumerate(_leaves(message), start=1):
        if any(part is body for body in skip):
            continue
        content_type = part.get_content_type()
        filename = part.get_filename() or (
            f"attachment-{number}{mimetypes.guess_extension(content_type) or '.bin'}"
        )
        yield _unfold(filename), _content(part), content_type


def _leaves(part: Message) -> Iterator[Message]:
    if part.get_content_maintype() == "multipart":
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _leaves(child)
    else:
        yield part


def _content(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else inner
        if isinstance(first, Message):
            return first.as_bytes(policy=policy.SMTP)
        return str(first).encode("utf-8", "surrogateescape")
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _unfold(value: str) -> str:
    return _FOLD.sub(" ", value)
