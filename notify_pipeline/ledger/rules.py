"""The ledger's rulebook: each decision a ledger takes, as a plain function over plain values.

A backend reads the rows a write depends on (locked for the rest of its transaction), asks these
functions what to do and writes the answer, so every database decides alike and the rules can be
tested without one. Lock order is a rule too: rows are written in key order, so concurrent
transactions over overlapping rows wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from notify_pipeline.events import Event
from notify_pipeline.ledger.base import (
    FINAL_EVENT_TYPES,
    Claim,
    ClaimResult,
    ClaimStatus,
    MessageState,
    Suppression,
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
