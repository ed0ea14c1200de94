"""The warehouse interface: idempotent, append-only event writes."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from notify_pipeline.events import Event


def service_table(service_id: str) -> str:
    """The analyst-facing per-service table name (docs/events.md: `events_<id with - as _>`)."""
    if not re.fullmatch(r"[a-z0-9-]+", service_id):
        raise ValueError(f"not a service id: {service_id!r}")
    return "events_" + service_id.replace("-", "_")


class Warehouse(ABC):
    @abstractmethod
    def write_events(self, events: Sequence[Event]) -> int:
        """Append events whose `event_id` is not stored yet; returns how many were new.

        Must be idempotent: writing the same events again (a retried flush) adds nothing.
        """
