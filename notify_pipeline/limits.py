"""Sending limits: a service's own rates, the deployment's defaults, and dedicated IP pools'
warm-up, as quotas the ledger counts in the same transaction as each claim (docs/registry.md).

What is counted is a recipient-delivery, the unit providers count: a message to three recipients
uses three. A message never splits: one that does not fit its window waits, whole, for the next;
one bigger than a whole window goes out alone into an otherwise empty one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from notify_pipeline.ledger.base import Quota, QuotaUsage, Window

if TYPE_CHECKING:
    from notify_pipeline.registry import Service

SES_POOL_PREFIX = "notify-pool-"
# SES allows configuration set names of up to 64 letters, digits, '-' and '_'.
MAX_POOL_NAME = 64 - len(SES_POOL_PREFIX)


def pool_configuration_set(pool: str) -> str:
    """The SES configuration set a dedicated IP pool's mail is sent with (its sending pool)."""
    return f"{SES_POOL_PREFIX}{pool}"


def service_scope(service_id: str) -> str:
    return f"service:{service_id}"


def pool_scope(pool: str) -> str:
    return f"pool:{pool}"


class ServiceLimits(BaseModel):
    """A service's own limits; an absent one is the deployment's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_minute: StrictInt | None = Field(
        default=None, ge=1, description="Recipient-deliveries per UTC minute, at most."
    )
    per_day: StrictInt | None = Field(
        default=None, ge=1, description="Recipient-deliveries per UTC day, at most."
    )


@dataclass(frozen=True)
class SendingLimits:
    """The deployment's side: default rates (0 means none) and the pools' warm-up schedule
    (entry n caps a pool's day n, counted from the day of its first send; none after the last)."""

    per_minute: int = 0
    per_day: int = 0
    warmup: tuple[int, ...] = ()

    def quotas(
        self, service_id: str, limits: ServiceLimits, pool: str | None
    ) -> tuple[Quota, ...]:
        """Every counter one of the service's messages must fit in."""
        per_minute = limits.per_minute or self.per_minute
        per_day = limits.per_day or self.per_day
        scope = service_scope(service_id)
        quotas = []
        if per_minute:
            quotas.append(Quota(scope, Window.MINUTE, cap=per_minute))
        if per_day:
            quotas.append(Quota(scope, Window.DAY, cap=per_day))
        if pool and self.warmup:
            quotas.append(Quota(pool_scope(pool), Window.DAY, schedule=self.warmup))
        return tuple(quotas)

    def quotas_of(self, services: Iterable[Service]) -> list[Quota]:
        """Every quota the services' mail is counted in, each once (a pool may be shared)."""
        return list(dict.fromkeys(
            q for s in services
            for q in self.quotas(s.id, s.limits, s.advanced.dedicated_ip_pool)))


def usage_row(usage: QuotaUsage) -> dict[str, Any]:
    """One quota's current window as plain JSON values (run metadata, `notify limits`)."""
    quota = usage.quota
    row: dict[str, Any] = {
        "scope": quota.scope,
        "limit": quota.reason.value,
        "window_start": usage.window_start.isoformat("T", "seconds"),
        "used": usage.used,
        "cap": usage.cap,
    }
    if quota.schedule:
        first = usage.first_day
        row["warmup_day"] = 1 if first is None else (usage.window_start.date() - first).days + 1
        row["first_day"] = first.isoformat() if first else None
    return row
