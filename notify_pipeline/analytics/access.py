"""Who may read a service's table: its `reporting_principals`, and nobody of another service.

In BigQuery each `events_<svc>` is a view in the events dataset, authorized on that dataset (so it
may read `events` on its readers' behalf), and each reporting principal gets table-level
`roles/bigquery.dataViewer` on that view only: the principal can query its own service's view and
neither `events` nor any other service's view. Locally the same plan is computed and shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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
