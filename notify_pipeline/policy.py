"""A service's policy: who may send, from which address, to whom, with which headers.

Checks run in a fixed order so that a request breaking several rules always gets the same reason:
unknown service, identity, authorisation, header safety, Reply-To, allow list, From domain.
Suppression is per recipient and handled by `split_suppressed`, because it removes recipients
rather than refusing the whole request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notify_pipeline.domain_verification import DomainVerification
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


class CustomDomainCheck(Protocol):
    """Whether a custom domain's DNS records are published and match (`domain_verification`);
    raises `DnsUnavailable` when DNS does not answer, so the batch is retried, not rejected."""

    def verification(self, domain: str) -> DomainVerification: ...


@dataclass(frozen=True)
class Domains:
    """The deployment's sending domains (from settings, never hard-coded), and how services'
    custom domains are verified (None: they are not checked)."""

    main: str
    testing: str
    custom: CustomDomainCheck | None = None


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
    domain = _sending_domain(request, service, domains)
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


def _sending_domain(request: SendRequest, service: Service, domains: Domains) -> str:
    """The service's usual domain, or the custom domain the request names once the service lists
    it and its records are verified (mail from an unverified domain would fail DMARC)."""
    usual = service.sending_domain(domains.main, domains.testing)
    wanted = request.from_domain
    if wanted is None or wanted == usual:
        return usual
    if wanted not in service.advanced.custom_domains:
        raise RequestRejected(
            RejectReason.UNAUTHORISED,
            f"service {service.id!r} may not send from {wanted}: it is not one of its"
            " advanced.custom_domains",
        )
    if domains.custom is not None:
        verification = domains.custom.verification(wanted)
        if not verification.verified:
            raise RequestRejected(
                RejectReason.UNAUTHORISED,
                f"custom domain {wanted} is not verified ({verification.problems()}): publish"
                " the records `notify dns-records` lists, then check `notify domains verify`",
            )
    return wanted


def split_suppressed(
    recipients: Iterable[str], suppressed: Collection[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, suppressed) recipients, given the lower-cased suppressed addresses.

    Suppression is case-blind on the whole address.
    """
    recipients = tuple(recipients)
    kept = tuple(r for r in recipients if r.lower() not in suppressed)
    return kept, tuple(r for r in recipients if r.lower() in suppressed)
