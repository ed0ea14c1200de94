"""SES event publishing records (configuration-set event destinations) as event rows.

One row per recipient of each record, joined back to our request through the `service` and
`message_id` tags `SesTransport` sets. The raw record is returned beside the rows for debugging and
never goes into the event table.

Event ids are deterministic so that SNS's at-least-once delivery never counts an event twice:
SES's message id, the event type, the recipient, and what tells two events of one type apart for
one recipient (the feedback id of a bounce or complaint, else the event's own timestamp: a
recipient may be delayed several times). SES's `Send` takes the very id the pipeline gave its own
`send` row at hand-off, so both collapse into one row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from notify_pipeline.delivery.ses import MESSAGE_ID_TAG, SERVICE_TAG, decode_tag_value
from notify_pipeline.errors import NotifyError
from notify_pipeline.events import BounceType, Event, EventType, make_event_id
from notify_pipeline.ledger.base import Suppression

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]
_Reason = Callable[[Record, Record], str | None]  # (event details, recipient entry) -> reason


class MalformedEvent(NotifyError, ValueError):
    """An authentic notification whose record cannot be read; it will never become readable."""


@dataclass(frozen=True)
class _Kind:
    """How one SES `eventType` maps onto rows."""

    event_type: EventType
    details: str  # the record's key holding this event's details
    recipients: str | None  # the details' per-recipient list; None: everyone in mail.destination
    reason: _Reason = lambda details, rcpt: None


def _joined(*parts: object) -> str | None:
    return ": ".join(str(p) for p in parts if p) or None


# SES eventType -> our event type. SES "Reject" (a virus found after SES accepted the message) and
# "Rendering Failure" are provider-side failures after hand-off, so `failure`, not our policy
# `reject`. Open, Click and Subscription are ignored on purpose (None): we enable neither open/click
# tracking nor SES contact lists, and the event vocabulary (docs/events.md) has no place for them.
# Anything else is unknown: ignored and counted, never a crash.
EVENT_TYPES: dict[str, _Kind | None] = {
    "Send": _Kind(EventType.SEND, "send", None),
    "Delivery": _Kind(EventType.DELIVERY, "delivery", "recipients"),
    "Bounce": _Kind(EventType.BOUNCE, "bounce", "bouncedRecipients",
                    lambda d, r: r.get("diagnosticCode") or r.get("status")),
    "Complaint": _Kind(EventType.COMPLAINT, "complaint", "complainedRecipients",
                       lambda d, r: d.get("complaintFeedbackType")),
    "DeliveryDelay": _Kind(EventType.DELIVERY_DELAY, "deliveryDelay", "delayedRecipients",
                           lambda d, r: _joined(d.get("delayType"), r.get("diagnosticCode"))),
    "Reject": _Kind(EventType.FAILURE, "reject", None,
                    lambda d, r: _joined("ses_reject", d.get("reason"))),
    "Rendering Failure": _Kind(EventType.FAILURE, "failure", None,
                               lambda d, r: _joined("rendering_failure", d.get("errorMessage"))),
    "Open": None,
    "Click": None,
    "Subscription": None,
}

# Which events put the address on our suppression list, and under what reason.
_SUPPRESSING = {EventType.BOUNCE: "bounce", EventType.COMPLAINT: "complaint"}


@dataclass(frozen=True)
class Normalised:
    """What one SES record became; `ignored` names the event type when it became nothing
    ("unknown:<type>" for a type SES added after this table was written)."""

    events: tuple[Event, ...] = ()
    suppressions: tuple[Suppression, ...] = ()
    ignored: str | None = None
    raw: Record = field(default_factory=dict)


def normalise(record: Record, *, suppress_for: timedelta) -> Normalised:
    """Rows (and suppressions) for one SES event record; `MalformedEvent` if it is unreadable."""
    name = record.get("eventType") if isinstance(record, Mapping) else None
    if not isinstance(name, str):
        raise MalformedEvent("no eventType")
    if name not in EVENT_TYPES:
        logger.warning("unknown SES event type %r ignored", name)
        return Normalised(ignored=f"unknown:{name}", raw=record)
    kind = EVENT_TYPES[name]
    if kind is None:
        return Normalised(ignored=name, raw=record)
    try:
        events = tuple(_events(record, name, kind))
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedEvent(f"{name} record: {type(e).__name__}: {e}") from e
    return Normalised(events, tuple(_suppressions(events, suppress_for)), raw=record)


def _events(record: Record, name: str, kind: _Kind) -> list[Event]:
    mail, details = record["mail"], record.get(kind.details) or {}
    at = _timestamp(details.get("timestamp") or mail["timestamp"])
    service, message_id = _tag(mail, SERVICE_TAG), _tag(mail, MESSAGE_ID_TAG)
    subject = (mail.get("commonHeaders") or {}).get("subject")
    bounce_type = _bounce_type(details) if kind.event_type is EventType.BOUNCE else None
    events = []
    for recipient, entry in _recipients(mail, details, kind):
        events.append(Event(
            event_id=_event_id(record, name, kind, recipient, service, message_id),
            service=service, message_id=message_id, event_type=kind.event_type,
            recipient=recipient, occurred_at=at, provider_message_id=str(mail["messageId"]),
            bounce_type=bounce_type,
            bounce_subtype=details.get("bounceSubType") if bounce_type else None,
            reason=kind.reason(details, entry), subject=subject,
        ))
    return events


def _recipients(mail: Record, details: Record, kind: _Kind) -> list[tuple[str, Record]]:
    """(address, its entry in the details) for each recipient the event is about."""
    entries = mail["destination"] if kind.recipients is None else details[kind.recipients]
    out = []
    for entry in entries:
        address = entry if isinstance(entry, str) else entry["emailAddress"]
        out.append((str(address), entry if isinstance(entry, Mapping) else {}))
    return out


def _event_id(record: Record, name: str, kind: _Kind, recipient: str, service: str | None,
              message_id: str | None) -> str:
    if kind.event_type is EventType.SEND and service and message_id:
        # The id `outcomes` gives the pipeline's own send row: the two are one event.
        return make_event_id(service, message_id, EventType.SEND.value, recipient.lower())
    details = record.get(kind.details) or {}
    discriminator = details.get("feedbackId") or details.get("timestamp")
    return make_event_id("ses", record["mail"]["messageId"], name, recipient.lower(),
                         discriminator)


def _suppressions(events: tuple[Event, ...], suppress_for: timedelta) -> list[Suppression]:
    return [
        Suppression(e.recipient.lower(), _SUPPRESSING[e.event_type], e.event_id,
                    e.occurred_at + suppress_for)
        for e in events
        if e.recipient and e.event_type in _SUPPRESSING
        and (e.event_type is EventType.COMPLAINT or e.bounce_type is BounceType.PERMANENT)
    ]


def _bounce_type(details: Record) -> BounceType:
    try:
        return BounceType(str(details.get("bounceType")))
    except ValueError:
        return BounceType.UNDETERMINED


def _tag(mail: Record, name: str) -> str | None:
    """A tag SesTransport set, decoded; None for mail we did not tag (or tags we cannot read)."""
    values = (mail.get("tags") or {}).get(name) or []
    try:
        return decode_tag_value(values[0]) if values else None
    except (TypeError, ValueError):
        logger.warning("unreadable %s tag on SES message %s", name, mail.get("messageId"))
        return None


def _timestamp(text: str) -> datetime:
    """SES's ISO 8601 UTC timestamps ("2017-08-05T00:41:02.669Z"), timezone-aware."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return at
