"""The ledger's rulebook: each decision a ledger takes, as a plain function over plain values.

A backend reads the rows a write depends on (locked for the rest of its transaction), asks these
functions what to do and writes the answer, so every database decides alike and the rules can be
tested without one. Lock order is a rule too: rows are written in key order, so concurrent
transactions over overlapping rows wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from notify_pipeline.events import Event
from notify_pipeline.ledger.base import (
    FINAL_EVENT_TYPES,
    Claim,
    ClaimResult,
    ClaimStatus,
    MessageState,
    Quota,
    Suppression,
    Window,
    owner_is_dead,
)

IsDead = Callable[[str], bool]
# (service, message_id, recipient, event_type, event_id): a recipient's final status.
StatusRow = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class HeldMessage:
    """A message row as a claim finds it: its state, the item and owner that hold it, its lease."""

    state: MessageState
    inbox_key: str
    owner: str
    lease_live: bool
    attempts: int


@dataclass(frozen=True)
class ClaimDecision:
    result: ClaimResult
    take_over: bool  # the row passes to the claiming owner: new lease, inbox item, one more attempt

    @property
    def is_new(self) -> bool:
        """The claim created the message's row (a first claim, the only one quotas charge)."""
        return self.result.status is ClaimStatus.CLAIMED and not self.take_over

    @property
    def queues_events(self) -> bool:
        """Only an owner that will now deliver the message queues the claim's events."""
        return self.result.status is ClaimStatus.CLAIMED


# A claim that created the message's row: the first owner, on its first attempt.
NEW_CLAIM = ClaimDecision(ClaimResult(ClaimStatus.CLAIMED, 1), take_over=False)


def decide_claim(
    held: HeldMessage, *, inbox_key: str, owner: str, is_dead: IsDead = owner_is_dead
) -> ClaimDecision:
    """What a claim of a message that already has a row decides.

    A terminal message is done for its own inbox item and a duplicate for any other; a message
    held by this owner, or by another live owner within its lease for another item, is a
    duplicate; for the same item it is busy. Otherwise the claim takes the message over, and a
    message left in `handing_off` may have been delivered, so its new owner gets `ambiguous`.
    """
    same_item = held.inbox_key == inbox_key
    if held.state.terminal:
        return _keep(held, ClaimStatus.DONE if same_item else ClaimStatus.DUPLICATE)
    if held.owner == owner:
        return _keep(held, ClaimStatus.DUPLICATE)
    if held.lease_live and not is_dead(held.owner):
        return _keep(held, ClaimStatus.BUSY if same_item else ClaimStatus.DUPLICATE)
    taken = (
        ClaimStatus.AMBIGUOUS if held.state is MessageState.HANDING_OFF else ClaimStatus.CLAIMED
    )
    return ClaimDecision(ClaimResult(taken, held.attempts + 1), take_over=True)


def _keep(held: HeldMessage, status: ClaimStatus) -> ClaimDecision:
    return ClaimDecision(ClaimResult(status, held.attempts), take_over=False)


def claims_in_key_order(claims: Sequence[Claim]) -> list[int]:
    """The positions of `claims` in the order their rows are locked."""
    return sorted(range(len(claims)), key=lambda i: (claims[i].service, claims[i].message_id))


def require_terminal(state: MessageState) -> None:
    """`finish` only records an end: a message is never finished back into an open state."""
    if not state.terminal:
        raise ValueError(f"finish needs a terminal state, not {state}")


def final_statuses(events: Iterable[Event]) -> list[StatusRow]:
    """The rows that may settle a recipient's fate, in key order.

    The store keeps the first row per recipient and ignores later ones; the sort is stable, so of
    two final events for one recipient the one recorded first stays first and wins.
    """
    rows = [
        (e.service, e.message_id, e.recipient.lower(), e.event_type.value, e.event_id)
        for e in events
        if e.event_type in FINAL_EVENT_TYPES and e.service and e.message_id and e.recipient
    ]
    return sorted(rows, key=lambda row: row[:3])


def suppressions_in_key_order(suppressions: Iterable[Suppression]) -> list[Suppression]:
    """Suppressions by lower-cased recipient; stable, so a later entry still extends an earlier."""
    lowered = [replace(s, recipient=s.recipient.lower()) for s in suppressions]
    return sorted(lowered, key=lambda s: s.recipient)


def batch_blocked(
    holder: str | None, *, owner: str, lease_live: bool, is_dead: IsDead = owner_is_dead
) -> bool:
    """A batch lease stops `owner` only while another live owner holds it (a retry delay does not:
    it only keeps the batch from being reported ready)."""
    if not holder:
        return False
    return holder != owner and lease_live and not is_dead(holder)


def batch_ready(holder: str | None, *, lease_live: bool, is_dead: IsDead = owner_is_dead) -> bool:
    """A batch may be taken once its lease or retry delay has run out, or its holder has died."""
    return not lease_live or (holder is not None and is_dead(holder))


# Quotas: fixed windows, counted per recipient-delivery, charged once per message (its first claim).


def window_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """The UTC minute or UTC day `now` falls in, as [start, end)."""
    now = now.astimezone(UTC)
    if window is Window.MINUTE:
        start = now.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def cap_in_force(quota: Quota, first_day: date | None, today: date) -> int | None:
    """A plain quota's cap; a warm-up's cap for `today` (day 1 is `first_day`, or today when
    nothing was counted yet), None once the schedule has run out."""
    if not quota.schedule:
        return quota.cap
    day = 0 if first_day is None else max(0, (today - first_day).days)
    return quota.schedule[day] if day < len(quota.schedule) else None


def fits(used: int, cap: int | None, cost: int) -> bool:
    """Whether `cost` more fits; a message bigger than a whole window fits only an empty one, so
    it is never held back for ever."""
    return cap is None or cost == 0 or used + cost <= cap or used == 0


@dataclass
class Meter:
    """One quota's counter for its current window, locked for the claim's transaction."""

    quota: Quota
    start: datetime
    end: datetime
    used: int
    cap: int | None
    first_day: date | None
    charged: int = 0


def quotas_in_key_order(claims: Sequence[Claim]) -> list[Quota]:
    """One quota per (scope, window) the claims use, in the order their counters are locked."""
    found: dict[tuple[str, str], Quota] = {}
    for claim in claims:
        for quota in claim.quotas:
            found.setdefault((quota.scope, quota.window.value), quota)
    return [found[key] for key in sorted(found)]


class QuotaBook:
    """The counters one claim transaction holds: it admits new claims and keeps their charges."""

    def __init__(self, meters: Iterable[Meter]) -> None:
        self.meters = {(m.quota.scope, m.quota.window): m for m in meters}

    def charge(self, quotas: Sequence[Quota], cost: int) -> Meter | None:
        """Take `cost` from every quota, or from none: the refusing meter whose window ends last
        (the claim can only go once all have room), or None when it was charged."""
        meters = [self.meters[(q.scope, q.window)] for q in quotas]
        refusing = [m for m in meters if not fits(m.used, m.cap, cost)]
        if refusing:
            return max(refusing, key=lambda m: m.end)
        for meter in meters:
            meter.used += cost
            meter.charged += cost
        return None


def deferred(meter: Meter) -> ClaimDecision:
    """A new claim that did not fit: no row, no events; its item waits for the window's end."""
    result = ClaimResult(ClaimStatus.DEFERRED, 0, not_before=meter.end,
                         deferred_by=meter.quota.reason)
    return ClaimDecision(result, take_over=False)


def reserve_tokens(
    tokens: float, updated: float, *, now: float, cost: float, rate: float, burst: float
) -> tuple[float, float, float]:
    """A token bucket that may go into debt: (tokens left, as of, seconds to wait first).

    The bucket refills from `updated` to `now`, at most to `burst`; a reservation takes its cost
    at once and waits until the bucket would have held it (at most a full bucket's worth, so a
    send bigger than the burst leaves debt instead of waiting for ever). A clock behind the
    bucket's refills nothing and never moves it back.
    """
    at = max(now, updated)
    available = min(burst, tokens + (at - updated) * rate)
    wait = max(0.0, (min(cost, burst) - available) / rate) + (at - now)
    return available - cost, at, wait
