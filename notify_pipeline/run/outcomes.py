"""Turning decisions and provider answers into events and suppressions (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from notify_pipeline.delivery.base import HandoffResult, RecipientStatus
from notify_pipeline.errors import FailureReason, RejectReason, SuppressionReason
from notify_pipeline.events import BounceType, Event, EventType, make_event_id
from notify_pipeline.ledger.base import MessageState, Suppression
from notify_pipeline.message import Envelope


def reject_events(
    *,
    inbox_key: str,
    service: str | None,
    message_id: str | None,
    recipients: Iterable[str],
    reason: RejectReason,
    subject: str | None,
    tags: Mapping[str, str],
    at: datetime,
) -> list[Event]:
    """One reject row per recipient (one row with no recipient when none could be read).

    The inbox key is part of the id: a rejected request may be fixed and sent again with the
    same id, and that later request deserves its own events.
    """
    return [
        Event(
            event_id=make_event_id("reject", inbox_key, service, message_id, rcpt, reason),
            service=service,
            message_id=message_id,
            event_type=EventType.REJECT,
            recipient=rcpt,
            occurred_at=at,
            reason=reason.value,
            subject=subject,
            tags=dict(tags),
        )
        for rcpt in (tuple(dict.fromkeys(recipients)) or (None,))
    ]


def _event(
    env: Envelope, kind: EventType, recipient: str, at: datetime, **extra: object
) -> Event:
    return Event(
        event_id=make_event_id(env.service, env.message_id, kind.value, recipient.lower()),
        service=env.service,
        message_id=env.message_id,
        event_type=kind,
        recipient=recipient,
        occurred_at=at,
        subject=env.subject,
        tags=dict(env.tags),
        **extra,  # type: ignore[arg-type]
    )


def queued_events(env: Envelope, recipients: Iterable[str], at: datetime) -> tuple[Event, ...]:
    return tuple(_event(env, EventType.QUEUED, r, at) for r in recipients)


def failure_events(
    env: Envelope, recipients: Iterable[str], reason: FailureReason, at: datetime
) -> list[Event]:
    return [_event(env, EventType.FAILURE, r, at, reason=reason.value) for r in recipients]


def handoff_events(
    env: Envelope,
    result: HandoffResult,
    *,
    reports_delivery: bool,
    at: datetime,
    suppress_for: timedelta,
) -> tuple[MessageState, list[Event], list[Suppression]]:
    """Events for each recipient's outcome; permanent bounces also suppress the address."""
    events: list[Event] = []
    suppressions: list[Suppression] = []
    pid = result.provider_message_id
    for out in result.outcomes:
        if out.status is RecipientStatus.ACCEPTED:
            events.append(_event(env, EventType.SEND, out.recipient, at, provider_message_id=pid))
            if reports_delivery:
                events.append(
                    _event(env, EventType.DELIVERY, out.recipient, at, provider_message_id=pid)
                )
        elif out.status is RecipientStatus.BOUNCED:
            bounce = _event(
                env,
                EventType.BOUNCE,
                out.recipient,
                at,
                provider_message_id=pid,
                bounce_type=BounceType.PERMANENT,
                bounce_subtype="General",
                reason=f"{out.code} {out.diagnostic}".strip(),
            )
            events.append(bounce)
            suppressions.append(
                Suppression(out.recipient.lower(), SuppressionReason.BOUNCE, bounce.event_id,
                            at + suppress_for)
            )
        else:
            events.append(
                _event(env, EventType.FAILURE, out.recipient, at, provider_message_id=pid,
                       reason=FailureReason.RECIPIENT_FAILED.value)
            )
    accepted = any(o.status is RecipientStatus.ACCEPTED for o in result.outcomes)
    return (MessageState.SENT if accepted else MessageState.FAILED), events, suppressions
