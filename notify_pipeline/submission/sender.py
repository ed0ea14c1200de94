"""Which sender addresses a service may submit from: its own, or a plus-addressed variant.

The address is the one the pipeline itself would put in From (`Service.from_address` on the
service's sending domain), so whatever is accepted here is exactly what gets delivered.
"""

from __future__ import annotations

from notify_pipeline.policy import Domains
from notify_pipeline.registry import Service
from notify_pipeline.submission.errors import MessageRefused, SubmissionReason


def sender_tag(service: Service, domains: Domains, address: str) -> str | None:
    """The plus tag of `address` (None for the plain address), or `MessageRefused`.

    Compared case-blind, and the tag is lower-cased: the pipeline only sends lower-case tags.
    """
    domain = service.sending_domain(domains.main, domains.testing)
    local_part, _, address_domain = address.strip().lower().rpartition("@")
    if address_domain == domain and local_part == service.local_part:
        return None
    prefix = f"{service.local_part}+"
    if address_domain == domain and local_part.startswith(prefix):
        tag = local_part.removeprefix(prefix)
        try:
            service.from_address(domain=domain, tag=tag)
        except ValueError as exc:
            raise MessageRefused(SubmissionReason.SENDER_NOT_ALLOWED, str(exc)) from None
        return tag
    raise MessageRefused(
        SubmissionReason.SENDER_NOT_ALLOWED,
        f"service {service.id!r} may send only from {service.from_address(domain=domain)}"
        f" or {prefix}TAG@{domain}",
    )
