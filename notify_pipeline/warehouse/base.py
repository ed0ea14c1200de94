"""The warehouse interface: idempotent, append-only event writes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from notify_pipeline.events import Event


class Warehouse(ABC):
    @abstractmethod
    def write_events(self, events: Sequence[Event]) -> int:
        """Append events whose `event_id` is not stored yet; returns how many were new.

        Must be idempotent: writing the same events again (a retried flush) adds nothing.
        """
