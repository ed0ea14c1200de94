"""Who may read a service's tables: its `reporting_principals` its events, its
`technical_principals` its configuration, and nobody of another service either.

In BigQuery each `events_<svc>` is a view in the events dataset, authorized on that dataset (so it
may read `events` on its readers' behalf), and each reporting principal gets table-level
`roles/bigquery.dataViewer` on that view only: the principal can query its own service's view and
neither `events` nor any other service's view. Each technical principal gets the same role on the
service's configuration table `config_<svc>` (see `service_config`) and on nothing else. Locally
the same plans are computed and shown.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from notify_pipeline.errors import NotifyError
from notify_pipeline.registry import Service

READER_ROLE = "roles/bigquery.dataViewer"


class AccessFailure(StrEnum):
    DENIED = "permission_denied"  # the deployment's account may not change the policy
    UNSUPPORTED = "unsupported"  # the BigQuery endpoint has no such call (an emulator)
    FAILED = "failed"


class AccessNotApplied(NotifyError):
    """The access plan could not be put in force; the table itself is up to date."""

    def __init__(self, reason: AccessFailure, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    """`principal` (IAM member syntax, as in the registry) holds `role` on `resource`."""

    principal: str
    role: str
    resource: str

    def as_dict(self) -> dict[str, str]:
        return {"principal": self.principal, "role": self.role, "resource": self.resource}


def access_plan(service: Service, table: str) -> list[Grant]:
    """The grants that let the service's reporting principals read its table, and only that."""
    return [Grant(p, READER_ROLE, table) for p in sorted(service.reporting_principals)]


def configuration_access_plan(service: Service, table: str) -> list[Grant]:
    """The grants that let the service's technical principals read its configuration table."""
    return [Grant(p, READER_ROLE, table) for p in sorted(service.technical_principals)]


def add_bindings(bindings: MutableSequence[dict[str, Any]], grants: Sequence[Grant]) -> bool:
    """Add the grants' members to an IAM policy's bindings; True when something was added (so
    a policy already in force is not written again)."""
    changed = False
    for role in sorted({g.role for g in grants}):
        wanted = {g.principal for g in grants if g.role == role}
        binding = next((b for b in bindings if b["role"] == role), None)
        if binding is None:
            bindings.append({"role": role, "members": set(wanted)})
            changed = True
            continue
        missing = wanted - set(binding["members"])
        if missing:
            binding["members"] = set(binding["members"]) | missing
            changed = True
    return changed
