"""Which sender addresses a service may submit from: its own, or a plus-addressed variant, on
its sending domain or on one of its `advanced.custom_domains`.

The address is the one the pipeline itself would put in From (`Service.from_address`), so
whatever is accepted here is exactly what gets delivered; whether a custom domain's records
verify is the pipeline's decision (a `reject` event), not the submission server's.
"""

from __future__ import annotations

from typing import NamedTuple

from notify_pipeline.policy import Domains
from notify_pipeline.registry import Service
from notify_pipeline.submission.errors import MessageRefused, SubmissionReason


class Sender(NamedTuple):
    """How a request names the sender: its plus tag, and its custom domain (None: usual)."""

    tag: str | None
    domain: str | None


def sender_of(service: Service, domains: Domains, address: str) -> Sender:
    """The request's view of `address`, or `MessageRefused` when it is not the service's.

    Compared case-blind, and the tag is lower-cased: the pipeline only sends lower-case tags.
    """
    usual = service.sending_domain(domains.main, domains.testing)
    local_part, _, address_domain = address.strip().lower().rpartition("@")
    base, plus, tag = local_part.partition("+")
    if base == service.local_part and (
        address_domain == usual or address_domain in service.advanced.custom_domains
    ):
        if plus:
            try:
                service.from_address(domain=address_domain, tag=tag)
            except ValueError as exc:
                raise MessageRefused(SubmissionReason.SENDER_NOT_ALLOWED, str(exc)) from None
        return Sender(tag if plus else None, None if address_domain == usual else address_domain)
    others = "".join(f", or at {d}" for d in service.advanced.custom_domains)
    raise MessageRefused(
        SubmissionReason.SENDER_NOT_ALLOWED,
        f"service {service.id!r} may send only from {service.from_address(domain=usual)}"
        f" or {service.local_part}+TAG@{usual}{others}",
    )
