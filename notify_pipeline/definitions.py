"""The code location: one `Definitions`, its resources chosen by `NOTIFY_PROFILE`."""

from __future__ import annotations

from typing import Any

import dagster as dg

from notify_pipeline.assets import ASSETS, JOBS, PER_SERVICE, SCHEDULES
from notify_pipeline.configuration import load_settings
from notify_pipeline.jobs import deliver_batch, delivery_worker, record_provider_events
from notify_pipeline.profiles import resources_for
from notify_pipeline.registry import RegistryError, load_registry
from notify_pipeline.run_retention import run_retention, run_retention_daily
from notify_pipeline.sensors.inbox import inbox_sensor
from notify_pipeline.sensors.provider_events import provider_events_sensor
from notify_pipeline.sensors.registry import registry_sensor
from notify_pipeline.sensors.services import services_sensor
from notify_pipeline.sensors.worker import delivery_worker_sensor
from notify_pipeline.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    resources = resources_for(settings)
    sensors = [inbox_sensor, registry_sensor, services_sensor]
    jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
        deliver_batch, delivery_worker, run_retention, *JOBS]
    if settings.delivery_worker:
        sensors.append(delivery_worker_sensor)
    if "provider_events" in resources:  # SES event notifications: the gcp profile only
        sensors.append(provider_events_sensor)
        jobs.append(record_provider_events)
    return dg.Definitions(
        assets=_with_owners(settings),
        jobs=jobs,
        schedules=[*SCHEDULES, run_retention_daily],
        sensors=sensors,
        resources=resources,
    )


def _with_owners(settings: Settings) -> list[Any]:
    """The analytics assets; the per-service ones owned by the services' technical contacts
    (Dagster owners are per asset, not per partition). A registry that does not load leaves
    them without owners, so the code location still loads and the sensor reports why."""
    try:
        contacts = sorted({c for s in load_registry(settings.registry).services
                           for c in s.technical_contacts})
    except RegistryError:
        contacts = []
    if not contacts:
        return list(ASSETS)
    owned = dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=contacts), PER_SERVICE)
    return [a for a in ASSETS if a not in PER_SERVICE] + list(owned)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server; settings are read here, not at import.

    A misconfigured deployment fails to load with `ConfigErrors`, one sentence per problem.
    """
    return build_definitions(load_settings())
