"""`notify analytics`: every analytics asset for every (or each named) service, in process."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from notify_pipeline.assets import PER_SERVICE, dns_records, events, sync_services
from notify_pipeline.errors import ConfigError
from notify_pipeline.profiles import resources_for
from notify_pipeline.registry import load_registry
from notify_pipeline.settings import Settings


def run_analytics(settings: Settings, instance: dg.DagsterInstance,
                  only: Sequence[str] = ()) -> dict[str, Any]:
    """Sync the `services` partitions, materialise each service's assets and `dns_records`,
    and summarise per service as the contract's JSON says."""
    registry = load_registry(settings.registry)
    unknown = sorted(set(only) - set(registry))
    if unknown:
        raise ConfigError("--service", f"not registered: {', '.join(unknown)}"
                          f" (registered: {', '.join(registry)})")
    sync_services(instance, list(registry))
    resources = resources_for(settings)
    summary: dict[str, Any] = {}
    for service_id in only or list(registry):
        result = dg.materialize([events, *PER_SERVICE], instance=instance,
                                partition_key=service_id, resources=resources)
        summary[service_id] = _service_summary(_metadata(result))
    dg.materialize([dns_records], instance=instance, resources=resources)
    return {"services": summary}


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Mapping[str, Any]]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in
                                           event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def _service_summary(meta: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rates = meta["bounce_rates"]
    return {
        "rows": meta["service_events"]["dagster/row_count"],
        "sent": rates["sent"],
        "bounce_rate": rates["bounce_rate"],
        "complaint_rate": rates["complaint_rate"],
        "bounce_level": rates["bounce_level"],
        "complaint_level": rates["complaint_level"],
        "alerts": meta["bounce_rate_alerts"]["alerts"],
    }
