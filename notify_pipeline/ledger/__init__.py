"""The delivery ledger: an atomic claim per (service, id), message states and the event outbox."""

from notify_pipeline.ledger.base import (
    BatchStatus,
    Claim,
    ClaimResult,
    ClaimStatus,
    Ledger,
    MessageState,
    Suppression,
    current_owner,
    owner_is_dead,
)

__all__ = [
    "BatchStatus",
    "Claim",
    "ClaimResult",
    "ClaimStatus",
    "Ledger",
    "MessageState",
    "Suppression",
    "current_owner",
    "owner_is_dead",
]
