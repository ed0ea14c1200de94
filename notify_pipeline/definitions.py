"""The code location: one `Definitions`, its resources chosen by `NOTIFY_PROFILE`."""

from __future__ import annotations

import dagster as dg

from notify_pipeline.jobs import deliver_batch
from notify_pipeline.profiles import resources_for
from notify_pipeline.sensors.inbox import inbox_sensor
from notify_pipeline.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[deliver_batch],
        sensors=[inbox_sensor],
        resources=resources_for(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server; settings are read here, not at import."""
    return build_definitions(Settings())
