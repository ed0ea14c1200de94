"""A service's policy: who may send, from which address, to whom, with which headers.

Checks run in a fixed order so that a request breaking several rules always gets the same reason:
unknown service, identity, authorisation, header safety, Reply-To, allow list. Suppression is
per recipient and handled by `split_suppressed`, because it removes recipients rather than
refusing the whole request.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from email_validator import EmailNotValidError, validate_email

from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.message import Attachment, Envelope
from notify_pipeline.registry import Registry, Service
from notify_pipeline.request import SendRequest

# Headers that identify the sender, carry routing or authentication results, or describe the MIME
# structure: a caller setting them could spoof, break signing or corrupt the message.
DISALLOWED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "Sender", "Return-Path", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date",
        "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
        "Content-Disposition", "DKIM-Signature", "Domainkey-Signature", "ARC-Seal",
        "ARC-Message-Signature", "ARC-Authentication-Results", "Authentication-Results",
        "Received", "Received-SPF", "Delivered-To", "Resent-From", "Resent-Sender", "Resent-To",
        "Resent-Cc", "Resent-Bcc", "Resent-Date", "Resent-Message-ID", "Errors-To",
    )
)
DISALLOWED_PREFIXES = ("x-ses-", "x-notify-")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext: printable ASCII except ':'
_BREAKS = ("\r", "\n", "\x00")


class IdentityVerifier(Protocol):
    """What policy needs from identity verification (see `identity.TokenVerifier`)."""

    def verify(self, token: str | None, *, received_at: datetime) -> _Identity: ...


class _Identity(Protocol):
    @property
    def email(self) -> str: ...


@dataclass(frozen=True)
class Domains:
    """The deployment's sending domains (from settings, never hard-coded)."""

    main: str
    testing: str


def authorise(
    request: SendRequest,
    *,
    registry: Registry,
    verifier: IdentityVerifier,
    received_at: datetime,
) -> Service:
    """The registered service the request speaks for, once its caller is proven to be allowed."""
    service = registry.get(request.service)
    if service is None:
        raise RequestRejected(
            RejectReason.UNKNOWN_SERVICE, registry.unknown_service(request.service)
        )
    identity = verifier.verify(request.identity_token, received_at=received_at)
    if not service.allows_service_account(identity.email):
        raise RequestRejected(
            RejectReason.UNAUTHORISED,
            f"{identity.email} is not a service account of {service.id!r}",
        )
    return service


def build_envelope(request: SendRequest, service: Service, domains: Domains) -> Envelope:
    """Apply the service's header, Reply-To and recipient rules and resolve the From address."""
    _check_injection(request)
    _check_headers(request.headers)
    if request.reply_to and not service.advanced.reply_to:
        raise RequestRejected(
            RejectReason.REPLY_TO_NOT_ENABLED,
            f"service {service.id!r} has not enabled the advanced reply_to option",
        )
    _check_addresses(request)
    refused = [r for r in request.recipients if not service.allows_recipient(r)]
    if refused:
        raise RequestRejected(
            RejectReason.RECIPIENT_NOT_ALLOWED,
            f"{len(refused)} recipient(s) not on the allow list of {service.id!r}: "
            + ", ".join(refused[:5]),
        )
    domain = service.sending_domain(domains.main, domains.testing)
    try:
        from_address = service.from_address(domain=domain, tag=request.from_tag)
    except ValueError as exc:
        raise RequestRejected(RejectReason.MALFORMED, f"from_tag: {exc}") from None
    return Envelope(
        service=service.id,
        message_id=request.id,
        from_display=service.display_name,
        from_address=from_address,
        to=request.to,
        cc=request.cc,
        bcc=request.bcc,
        reply_to=request.reply_to,
        subject=request.subject,
        text=request.text,
        html=request.html,
        headers=tuple(request.headers.items()),
        attachments=tuple(
            Attachment(a.filename, a.content_type, a.content()) for a in request.attachments
        ),
        tags=dict(request.tags),
    )


def split_suppressed(
    recipients: Iterable[str], suppressed: Collection[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, suppressed) recipients, given the lower-cased suppressed addresses.

    Suppression is case-blind on the whole address.
    """
    recipients = tuple(recipients)
    kept = tuple(r for r in recipients if r.lower() not in suppressed)
    return kept, tuple(r for r in recipients if r.lower() in suppressed)


def _check_injection(request: SendRequest) -> None:
    """CR, LF or NUL anywhere that ends up in a header would let a caller add headers."""
    fields: list[tuple[str, str]] = [("subject", request.subject)]
    fields += [("from_tag", request.from_tag or "")]
    for name in ("to", "cc", "bcc", "reply_to"):
        fields += [(f"{name}[{i}]", v) for i, v in enumerate(getattr(request, name))]
    for key, value in request.headers.items():
        fields += [(f"headers.{key!r}", key), (f"headers.{key!r}", value)]
    for i, att in enumerate(request.attachments):
        fields += [(f"attachments[{i}].filename", att.filename)]
    for where, value in fields:
        if any(ch in value for ch in _BREAKS):
            raise RequestRejected(
                RejectReason.HEADER_INJECTION, f"{where} contains a line break or NUL"
            )


def _check_headers(headers: dict[str, str]) -> None:
    seen: set[str] = set()
    for name in headers:
        lowered = name.lower()
        if not HEADER_NAME.match(name):
            raise RequestRejected(
                RejectReason.DISALLOWED_HEADER, f"{name!r} is not a valid header name"
            )
        if lowered in DISALLOWED_HEADERS or lowered.startswith(DISALLOWED_PREFIXES):
            raise RequestRejected(
                RejectReason.DISALLOWED_HEADER, f"callers may not set the {name} header"
            )
        if lowered in seen:
            raise RequestRejected(
                RejectReason.DISALLOWED_HEADER, f"the {name} header is given more than once"
            )
        seen.add(lowered)


def _check_addresses(request: SendRequest) -> None:
    for name in ("to", "cc", "bcc", "reply_to"):
        for i, address in enumerate(getattr(request, name)):
            try:
                validate_email(address, check_deliverability=False, allow_smtputf8=True)
            except EmailNotValidError as exc:
                raise RequestRejected(
                    RejectReason.MALFORMED, f"{name}[{i}] is not a valid email address: {exc}"
                ) from None
