"""`services_sensor`: keeps the `services` partitions equal to the registry's service ids."""


import json

import dagster as dg

from notify_pipeline.assets.partitions import partition_changes, services
from notify_pipeline.registry import RegistryError
from notify_pipeline.resources import RegistryResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a `services` partition for each newly registered service and"
           " deletes those of removed ones; the tick says what changed.")
def services_sensor(context: dg.SensorEvaluationContext,
                    registry: RegistryResource) -> dg.SensorResult:
    assert services.name is not None
    try:
        ids = list(registry.load())
    except RegistryError as exc:
        return dg.SensorResult(skip_reason=f"registry does not load; partitions unchanged:"
                               f" {exc.issues[0]} ({len(exc.issues)} issue(s))")
    added, removed = partition_changes(context.instance.get_dynamic_partitions(services.name),
                                       ids)
    cursor = json.dumps(sorted(ids))
    if not added and not removed:
        return dg.SensorResult(skip_reason=f"{len(ids)} services, unchanged", cursor=cursor)
    change = f"added {added or 'none'}, removed {removed or 'none'}"
    context.log.info(change)
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(services.build_add_request(added))
    if removed:
        requests.append(services.build_delete_request(removed))
    return dg.SensorResult(skip_reason=change, dynamic_partitions_requests=requests,
                           cursor=cursor)
