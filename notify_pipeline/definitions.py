"""The code location: one `Definitions`, its resources chosen by `NOTIFY_PROFILE`."""

from __future__ import annotations

import dagster as dg

from notify_pipeline.configuration import load_settings
from notify_pipeline.jobs import deliver_batch, delivery_worker, record_provider_events
from notify_pipeline.profiles import resources_for
from notify_pipeline.sensors.inbox import inbox_sensor
from notify_pipeline.sensors.provider_events import provider_events_sensor
from notify_pipeline.sensors.registry import registry_sensor
from notify_pipeline.sensors.worker import delivery_worker_sensor
from notify_pipeline.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    resources = resources_for(settings)
    sensors = [inbox_sensor, registry_sensor]
    jobs = [deliver_batch, delivery_worker]
    if settings.delivery_worker:
        sensors.append(delivery_worker_sensor)
    if "provider_events" in resources:  # SES event notifications: the gcp profile only
        sensors.append(provider_events_sensor)
        jobs.append(record_provider_events)
    return dg.Definitions(
        jobs=jobs,
        sensors=sensors,
        resources=resources,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server; settings are read here, not at import.

    A misconfigured deployment fails to load with `ConfigErrors`, one sentence per problem.
    """
    return build_definitions(load_settings())
