"""Retention of the copies an inbox keeps after processing (`rejected/`, and `done/` in GCS).

Kept copies are redacted requests, held for operators. They expire as the service's events do:
a copy of a service is removed once it was kept longer ago than that service's cutoff; a copy
that names no registered service (malformed, an unknown or removed service, an entry that could
not be read) once it is older than the deployment's default cutoff. Copies of registered
services outside the pass are left for their own service's pass, so one service's retention
run removes nothing of another's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from notify_pipeline.registry import SERVICE_ID
from notify_pipeline.request import peek


@dataclass(frozen=True)
class KeptRetention:
    """Which kept copies a pass removes.

    `cutoffs` maps the services in this pass to the time before which their copies expire;
    `registered` is every registered service id (those not in `cutoffs` are not touched);
    `default_cutoff` applies to copies of no registered service.
    """

    cutoffs: Mapping[str, datetime]
    default_cutoff: datetime
    registered: frozenset[str]

    def cutoff_for(self, service: str | None) -> datetime | None:
        """The cutoff for a copy of `service` (None: unknown), or None to leave it alone."""
        if service is not None and service in self.cutoffs:
            return self.cutoffs[service]
        if service is not None and service in self.registered:
            return None
        return self.default_cutoff

    def attributed(self, service: str | None) -> str | None:
        """`service` if this pass knows it as registered, else None (an unattributed copy)."""
        return service if service is not None and service in self.registered else None

    @property
    def latest_cutoff(self) -> datetime:
        """No copy kept at or after this can expire in this pass: listings may stop there."""
        return max([*self.cutoffs.values(), self.default_cutoff])


@dataclass
class ExpiredCopies:
    """What a pass removed: by kind of copy (`done`, `rejected`) and by owning service, with
    copies of no registered service counted as `unattributed`; `examined` is how many kept
    copies old enough to be candidates were looked at, `failed` how many expired ones could not
    be removed (left for the next pass)."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_service: Counter[str] = field(default_factory=Counter)
    unattributed: int = 0
    examined: int = 0
    failed: int = 0

    @property
    def removed(self) -> int:
        return sum(self.by_kind.values())

    def count(self, kind: str, service: str | None) -> None:
        self.by_kind[kind] += 1
        if service is None:
            self.unattributed += 1
        else:
            self.by_service[service] += 1


def service_of(body: bytes) -> str | None:
    """The service id a kept request names, best effort; None when it names none that could
    be a service id (so what is recorded of it is always a plain id)."""
    service = peek(body).service
    return service if service is not None and re.fullmatch(SERVICE_ID, service) else None
