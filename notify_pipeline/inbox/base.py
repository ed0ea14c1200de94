"""The inbox interface.

Every inbox works in two steps. `stage` durably moves new requests into a named batch (a sensor
does this, cheaply); a run then reads the batch and `finish`es each item once its outcome is
recorded. An item leaves its batch only after that, so a crashed run loses nothing: the batch is
simply run again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from notify_pipeline.inbox.retention import ExpiredCopies, KeptRetention


@dataclass(frozen=True)
class InboxItem:
    """One raw request: its key within the batch, its bytes, and when the inbox received it.

    `arrival` names this arrival of the request for the ledger, and defaults to `key`. It stays
    the same when a batch is run again (a re-run is the same arrival, not a duplicate), and
    differs when the same request is enqueued again under the same key (that is a duplicate).
    """

    key: str
    body: bytes
    received_at: datetime
    arrival: str = ""

    def __post_init__(self) -> None:
        if not self.arrival:
            object.__setattr__(self, "arrival", self.key)


class Inbox(ABC):
    @abstractmethod
    def stage(self, *, max_items: int, max_age_seconds: float, now: datetime) -> str | None:
        """Move up to `max_items` waiting requests into a new batch and return its id.

        Stages nothing (returns None) while fewer than `max_items` wait and the oldest has
        waited less than `max_age_seconds`: that is what bounds batch size and latency.
        """

    def stage_many(
        self, *, max_items: int, max_age_seconds: float, now: datetime, max_batches: int
    ) -> Iterator[str]:
        """Stage up to `max_batches` batches as `stage` would, yielding each id once it is
        staged. Inboxes that can choose several batches from one listing override this."""
        for _ in range(max_batches):
            batch_id = self.stage(max_items=max_items, max_age_seconds=max_age_seconds, now=now)
            if batch_id is None:
                return
            yield batch_id

    @abstractmethod
    def batches(self) -> list[str]:
        """Ids of staged batches that still hold unfinished items, oldest first."""

    @abstractmethod
    def read(self, batch_id: str) -> Iterator[InboxItem]:
        """The batch's remaining items."""

    @abstractmethod
    def finish(self, batch_id: str, keys: Sequence[str]) -> None:
        """Remove finished items; the batch disappears once empty."""

    @abstractmethod
    def quarantine(self, batch_id: str, key: str, body: bytes, note: str) -> None:
        """Keep a rejected request (secrets removed) beside the reason, for operators."""

    @abstractmethod
    def expire_kept(self, retention: KeptRetention) -> ExpiredCopies:
        """Remove the kept copies (`quarantine`d and finished requests) that `retention` says
        have expired; waiting and staged requests are never touched. Idempotent: a second pass
        with the same cutoffs removes nothing."""

    @abstractmethod
    def waiting(self) -> int:
        """How many requests wait to be staged (for sensor metadata)."""
