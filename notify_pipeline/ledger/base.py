"""Ledger interface and the owner identity that makes stale claims recoverable.

Exactly-once rests on three rules every implementation keeps:
1. `claim` is atomic per (service, id): one owner at a time, re-claimable only when the holder is
   dead or its lease has run out.
2. `begin_handoff` is a compare-and-set from `claimed` to `handing_off` by the current owner, made
   durable *before* the provider is contacted. A message found in `handing_off` with a dead owner
   may have been delivered, so it is never retried: it becomes `ambiguous`.
3. `finish` writes the terminal state, its events (to the outbox) and any suppressions in one
   transaction, so a crash can never record one without the others.

`settle` keeps the second and third rules for several messages at once: the run records the
hand-offs that finished and begins the next one in a single transaction (one commit per
message instead of two), and a message stays `handing_off` until its settlement commits.
"""

from __future__ import annotations

import os
import socket
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

from notify_pipeline.errors import DeferReason
from notify_pipeline.events import Event, EventType

# Event types that settle a recipient's fate. The first one recorded stands: a late or
# out-of-order notification is still stored as an event but never overwrites it.
FINAL_EVENT_TYPES = frozenset(
    {EventType.DELIVERY, EventType.BOUNCE, EventType.FAILURE, EventType.REJECT}
)


class MessageState(StrEnum):
    CLAIMED = "claimed"
    HANDING_OFF = "handing_off"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    AMBIGUOUS = "ambiguous"

    @property
    def terminal(self) -> bool:
        return self not in (MessageState.CLAIMED, MessageState.HANDING_OFF)


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"  # this owner holds the message now: deliver it
    DONE = "done"  # already terminal from this same inbox item: a re-run, just clean up
    DUPLICATE = "duplicate"  # handled, or being handled, for another inbox item: drop it
    BUSY = "busy"  # another live owner holds it: keep the inbox item for a later attempt
    AMBIGUOUS = "ambiguous"  # a dead owner was mid-hand-off: this owner must record it as such
    DEFERRED = "deferred"  # a new claim over a quota: not claimed; keep the item until not_before


@dataclass(frozen=True)
class ClaimResult:
    status: ClaimStatus
    attempts: int  # how many owners have claimed this message, this one included
    not_before: datetime | None = None  # DEFERRED: when the refusing quota's window ends
    deferred_by: DeferReason | None = None  # DEFERRED: which quota refused it


class Window(StrEnum):
    """A quota's fixed window: a UTC minute or a UTC day."""

    MINUTE = "minute"
    DAY = "day"


@dataclass(frozen=True)
class Quota:
    """A counter a new claim must fit in: at most `cap` recipient-deliveries of `scope` per window.

    A `schedule` (a warm-up) stands instead of `cap`: its entry n is the cap on the scope's day n,
    counted from the first day anything was counted for it; after the last entry there is none.
    """

    scope: str  # what is counted: "service:<id>" or "pool:<name>"
    window: Window
    cap: int | None = None
    schedule: tuple[int, ...] = ()

    @property
    def reason(self) -> DeferReason:
        if self.schedule:
            return DeferReason.WARMUP
        return DeferReason.PER_MINUTE if self.window is Window.MINUTE else DeferReason.PER_DAY


@dataclass(frozen=True)
class QuotaUsage:
    """A quota's current window, as operators see it."""

    quota: Quota
    window_start: datetime
    used: int
    cap: int | None  # in force for this window (a warm-up's day), None when uncapped
    first_day: date | None  # a warm-up's day 1, None before anything was counted


@dataclass(frozen=True)
class BatchStatus:
    attempts: int  # runs that have taken this batch so far
    ready: bool  # no live owner holds it and any retry delay has passed


@dataclass(frozen=True)
class Claim:
    service: str
    message_id: str
    inbox_key: str
    queued_events: tuple[Event, ...] = ()
    cost: int = 0  # recipient-deliveries a new claim uses of each quota
    quotas: tuple[Quota, ...] = ()


@dataclass(frozen=True)
class Suppression:
    recipient: str
    reason: str
    event_id: str
    expires_at: datetime


def _process_start_ticks(pid: int) -> str:
    """The kernel's start time of a process, so a reused pid is not mistaken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rpartition(")")[2].split()[19]


def current_owner(run_id: str) -> str:
    """An owner id naming this process: host, pid, process start time and run id."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_process_start_ticks(pid)}|{run_id}"


def owner_is_dead(owner: str) -> bool:
    """True only when the owner's process is certainly gone (same host, pid gone or reused)."""
    try:
        host, pid_text, ticks, _run = owner.split("|", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or not sys.platform.startswith("linux"):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rpartition(")")[2].split()
    return fields[0] in ("Z", "X") or fields[19] != ticks


@dataclass(frozen=True)
class Settlement:
    """A message's terminal state with the events and suppressions it records (`finish`)."""

    service: str
    message_id: str
    state: MessageState
    events: Sequence[Event] = ()
    provider_message_id: str | None = None
    suppressions: Sequence[Suppression] = ()


@dataclass(frozen=True)
class Settled:
    """What `settle` did: for each settlement whether this owner still held the message and it
    was recorded, and whether the hand-off it was asked to begin has begun."""

    recorded: tuple[bool, ...]
    begun: bool | None = None  # None: no hand-off was asked for


class Ledger(ABC):
    """Durable message states, event outbox, suppression list and batch leases."""

    @abstractmethod
    def claim(
        self, claims: Sequence[Claim], *, owner: str, lease_seconds: float, now: datetime
    ) -> list[ClaimResult]:
        """Claim each message for `owner`, in one transaction; new claims queue their events.

        A new claim (the message's first) also takes its cost from each of its quotas, or, if
        one has no room left in its current window, is not made at all: `DEFERRED`. Quota
        counters are locked first, in key order, so claims never deadlock over them.
        """

    @abstractmethod
    def release(self, keys: Sequence[tuple[str, str]], *, owner: str,
                attempted: bool = True) -> None:
        """Hand claims back, unsent, for a later attempt (only when nothing was handed off).

        `attempted=False`: the messages were never offered to the provider (they waited behind
        one that found it away), so this claim does not count against their attempts."""

    @abstractmethod
    def settle(
        self, settlements: Sequence[Settlement], *, owner: str,
        begin: tuple[str, str] | None = None,
    ) -> Settled:
        """Record each settlement as `finish` does, then begin the hand-off of `begin` (a
        service and message id) as `begin_handoff` does, all in one transaction."""

    def begin_handoff(self, service: str, message_id: str, *, owner: str) -> bool:
        """Move `claimed` → `handing_off` if `owner` still holds the claim; durable on return."""
        return bool(self.settle([], owner=owner, begin=(service, message_id)).begun)

    def finish(
        self,
        service: str,
        message_id: str,
        *,
        owner: str,
        state: MessageState,
        events: Sequence[Event],
        provider_message_id: str | None = None,
        suppressions: Sequence[Suppression] = (),
    ) -> bool:
        """Record a terminal state with its events and suppressions atomically.

        Returns False (and writes nothing) when `owner` no longer holds the message.
        """
        settlement = Settlement(service, message_id, state, events, provider_message_id,
                                suppressions)
        return self.settle([settlement], owner=owner).recorded[0]

    @abstractmethod
    def add_events(
        self, events: Sequence[Event], suppressions: Sequence[Suppression] = ()
    ) -> None:
        """Queue events that belong to no claim (rejects, provider notifications) in the outbox,
        with any suppressions they cause, in one transaction."""

    @abstractmethod
    def final_status(self, service: str, message_id: str, recipient: str) -> str | None:
        """The recipient's final event type (first final event wins), or None while pending."""

    @abstractmethod
    def pending_events(self, limit: int) -> list[tuple[int, Event]]:
        """The oldest outbox events not yet acknowledged, with their sequence numbers."""

    @abstractmethod
    def ack_events(self, seqs: Sequence[int]) -> None:
        """Drop outbox events the warehouse has durably stored."""

    @abstractmethod
    def suppressed(self, recipients: Iterable[str], *, now: datetime) -> set[str]:
        """The subset of (lower-cased) recipients currently on the suppression list."""

    @abstractmethod
    def add_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        """Suppress recipients (later entries extend earlier ones)."""

    @abstractmethod
    def suppressions(self, *, now: datetime) -> list[Suppression]:
        """Every suppression in force at `now`, by address (for operators)."""

    @abstractmethod
    def remove_suppression(self, recipient: str) -> bool:
        """Lift a recipient's suppression (an operator's decision); False if there was none."""

    @abstractmethod
    def state_of(self, service: str, message_id: str) -> MessageState | None:
        """The message's current state, or None if it was never claimed."""

    @abstractmethod
    def acquire_batch(
        self, batch_id: str, *, owner: str, lease_seconds: float, now: datetime
    ) -> int | None:
        """Take the batch lease; returns the attempt number, or None if a live owner holds it."""

    @abstractmethod
    def batch_status(self, batch_id: str, *, now: datetime) -> BatchStatus:
        """How often the batch was taken, and whether a run may take it now."""

    @abstractmethod
    def release_batch(
        self, batch_id: str, *, owner: str, retry_after_seconds: float, now: datetime
    ) -> None:
        """Give the batch lease up; its remaining items may be retried after the delay."""

    @abstractmethod
    def quota_usage(self, quotas: Sequence[Quota], *, now: datetime) -> list[QuotaUsage]:
        """Each quota's current window: how much is used and the cap in force."""

    @abstractmethod
    def take_tokens(
        self, bucket: str, cost: float, *, rate: float, burst: float, now: float
    ) -> float:
        """Take `cost` from a token bucket shared by every process on this ledger (refilled at
        `rate` a second up to `burst`); returns how long the caller must wait before it spends
        them. The bucket may go into debt, so callers queue in the order they took."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
