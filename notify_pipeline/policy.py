"""A service's policy: who may send, from which address, to whom, with which headers.

Checks run in a fixed order so that a request breaking several rules always gets the same reason:
unknown service, identity, authorisation, header safety, Reply-To, allow list. Suppression is
per recipient and handled by `split_suppressed`, because it removes recipients rather than
refusing the whole request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.message import Attachment, Envelope
from notify_pipeline.registry import Registry, Service
from notify_pipeline.request import SendRequest
from notify_pipeline.request_checks import check_addresses, check_headers, check_injection


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
    check_injection(request)
    check_headers(request.headers)
    if request.reply_to and not service.advanced.reply_to:
        raise RequestRejected(
            RejectReason.REPLY_TO_NOT_ENABLED,
            f"service {service.id!r} has not enabled the advanced reply_to option",
        )
    addresses = check_addresses(request)
    recipients = (*addresses["to"], *addresses["cc"], *addresses["bcc"])
    refused = [r for r in recipients if not service.allows_recipient(r)]
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
        to=addresses["to"],
        cc=addresses["cc"],
        bcc=addresses["bcc"],
        reply_to=addresses["reply_to"],
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
