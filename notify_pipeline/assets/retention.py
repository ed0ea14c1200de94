"""`event_retention`: a service's events and its inbox copies expire after `retention_days`."""


from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from notify_pipeline.assets.events import EVENTS
from notify_pipeline.assets.partitions import GROUP, registered, services
from notify_pipeline.assets.resource import analytics_store
from notify_pipeline.events import utcnow
from notify_pipeline.inbox.retention import ExpiredCopies, KeptRetention
from notify_pipeline.registry import Service
from notify_pipeline.resources import InboxResource, RegistryResource, WarehouseResource

DEFAULT_RETENTION_DAYS: int = Service.model_fields["retention_days"].default


@dg.asset(partitions_def=services, deps=[EVENTS], group_name=GROUP, kinds={"table"})
def event_retention(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                    registry: RegistryResource, inbox: InboxResource
                    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Deletes the service's events that occurred more than its `retention_days` (default 400)
    ago, before the tables downstream are refreshed (so they agree with what is kept). In
    BigQuery the delete names only old `occurred_at` partitions. Also removes the inbox's kept
    copies (`rejected/`, and `done/` in GCS) of the service's requests kept longer ago than
    that, and those naming no registered service after the default period."""
    service = registered(registry, context.partition_key)
    now = utcnow()
    cutoff = now - timedelta(days=service.retention_days)
    deleted = analytics_store(warehouse).delete_expired(service.id, cutoff)
    default_cutoff = now - timedelta(days=DEFAULT_RETENTION_DAYS)
    expired = inbox.open().expire_kept(KeptRetention(
        cutoffs={service.id: cutoff}, default_cutoff=default_cutoff,
        registered=frozenset(registry.load())))
    if expired.failed:
        context.log.warning(f"{expired.failed} expired inbox copies could not be removed;"
                            " the next run tries again")
    return dg.MaterializeResult(metadata={
        "deleted": dg.MetadataValue.int(deleted),
        "retention_days": dg.MetadataValue.int(service.retention_days),
        "cutoff": dg.MetadataValue.timestamp(cutoff),
        **inbox_metadata(expired, service.id, default_cutoff),
    })


def inbox_metadata(expired: ExpiredCopies, service_id: str, default_cutoff: datetime
                   ) -> dict[str, Any]:
    """The pass's counts, as numbers the asset page plots."""
    return {
        "inbox_removed": dg.MetadataValue.int(expired.by_service[service_id]),
        "inbox_removed_done": dg.MetadataValue.int(expired.by_kind["done"]),
        "inbox_removed_rejected": dg.MetadataValue.int(expired.by_kind["rejected"]),
        "inbox_removed_unattributed": dg.MetadataValue.int(expired.unattributed),
        "inbox_examined": dg.MetadataValue.int(expired.examined),
        "inbox_failed": dg.MetadataValue.int(expired.failed),
        "default_cutoff": dg.MetadataValue.timestamp(default_cutoff),
    }
