"""What to do with one raw request: accept it as an envelope, or reject it with its events.

A request is parsed once on the way to acceptance. One that fails to parse is read once more,
leniently, only to attribute its reject rows (service, id, recipients) when it can be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from notify_pipeline.errors import RequestRejected
from notify_pipeline.events import Event
from notify_pipeline.inbox.base import InboxItem
from notify_pipeline.message import Envelope
from notify_pipeline.policy import Domains, IdentityVerifier, authorise, build_envelope
from notify_pipeline.registry import Registry
from notify_pipeline.request import parse_request, peek
from notify_pipeline.run.outcomes import reject_events


@dataclass(frozen=True)
class Accepted:
    """A request that passed policy; `recipients` are those left after suppression."""

    item: InboxItem
    envelope: Envelope
    recipients: tuple[str, ...] = ()
    suppressed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejected:
    item: InboxItem
    error: RequestRejected
    events: list[Event]


@dataclass(frozen=True)
class Rules:
    """What a decision depends on, fixed for a batch."""

    registry: Registry
    domains: Domains
    verifier: IdentityVerifier
    max_request_bytes: int


def decide(item: InboxItem, rules: Rules, at: datetime) -> Accepted | Rejected:
    try:
        request = parse_request(item.body, max_bytes=rules.max_request_bytes)
    except RequestRejected as exc:
        found = peek(item.body)
        return _reject(item, exc, at, found.service, found.message_id, found.recipients)
    try:
        service_def = authorise(
            request, registry=rules.registry, verifier=rules.verifier,
            received_at=item.received_at,
        )
        envelope = build_envelope(request, service_def, rules.domains)
    except RequestRejected as exc:
        return _reject(item, exc, at, request.service, request.id, request.recipients,
                       request.subject, request.tags)
    return Accepted(item, envelope)


def _reject(
    item: InboxItem,
    exc: RequestRejected,
    at: datetime,
    service: str | None,
    message_id: str | None,
    recipients: Sequence[str],
    subject: str | None = None,
    tags: dict[str, str] | None = None,
) -> Rejected:
    events = reject_events(
        inbox_key=item.arrival, service=service, message_id=message_id, recipients=recipients,
        reason=exc.reason, subject=subject, tags=tags or {}, at=at,
    )
    return Rejected(item, exc, events)
