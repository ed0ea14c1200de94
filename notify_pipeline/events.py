"""The normalised event record (the event table, docs/events.md) and its stable id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    QUEUED = "queued"
    REJECT = "reject"
    SEND = "send"
    DELIVERY = "delivery"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY_DELAY = "delivery_delay"
    FAILURE = "failure"


class BounceType(StrEnum):
    PERMANENT = "Permanent"
    TRANSIENT = "Transient"
    UNDETERMINED = "Undetermined"


EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "service",
    "message_id",
    "provider_message_id",
    "event_type",
    "recipient",
    "occurred_at",
    "recorded_at",
    "bounce_type",
    "bounce_subtype",
    "reason",
    "subject",
    "tags",
)


def make_event_id(*parts: object) -> str:
    """A stable id from the parts that make an event unique, so a replay yields the same id."""
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One row of the events table: one event for one recipient."""

    event_id: str
    service: str | None
    message_id: str | None
    event_type: EventType
    recipient: str | None
    occurred_at: datetime
    provider_message_id: str | None = None
    recorded_at: datetime | None = None
    bounce_type: BounceType | None = None
    bounce_subtype: str | None = None
    reason: str | None = None
    subject: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise for the outbox; `from_json` is its inverse. A shallow copy of the fields:
        `dataclasses.asdict` deep-copies each one and cost more than the JSON encoding."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tags"] = dict(self.tags)
        data["occurred_at"] = self.occurred_at.isoformat()
        data["recorded_at"] = self.recorded_at.isoformat() if self.recorded_at else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = json.loads(text)
        data["event_type"] = EventType(data["event_type"])
        data["bounce_type"] = BounceType(data["bounce_type"]) if data["bounce_type"] else None
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
        if data["recorded_at"]:
            data["recorded_at"] = datetime.fromisoformat(data["recorded_at"])
        return cls(**data)

    def row(self, recorded_at: datetime) -> dict[str, Any]:
        """The table row, with `recorded_at` stamped at write time and tags as JSON text."""
        return {
            "event_id": self.event_id,
            "service": self.service,
            "message_id": self.message_id,
            "provider_message_id": self.provider_message_id,
            "event_type": self.event_type.value,
            "recipient": self.recipient,
            "occurred_at": self.occurred_at,
            "recorded_at": self.recorded_at or recorded_at,
            "bounce_type": self.bounce_type.value if self.bounce_type else None,
            "bounce_subtype": self.bounce_subtype,
            "reason": self.reason,
            "subject": self.subject,
            "tags": json.dumps(self.tags, sort_keys=True),
        }
