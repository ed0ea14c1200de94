"""`registry_sensor`: says in the UI whether the registry on disk is the one deliveries use.

Runs pick up registry changes themselves (`RegistryWatch`); this sensor is where an operator sees
a broken change: its ticks fail, red on the sensor page, naming every problem, until the folder
loads again (meanwhile the runs keep the last good registry). A good registry's tick is skipped
with the services it holds.
"""


from pathlib import Path

import dagster as dg

from notify_pipeline.registry import RegistryError, validate_registry
from notify_pipeline.resources import RegistryResource


class BrokenRegistry(RegistryError):
    """The registry folder does not load; runs keep the last good registry in force."""

    def __str__(self) -> str:
        return ("the registry on disk does not load, so running deliveries keep the last good"
                " one; fix these (`notify registry validate`):\n" + super().__str__())


@dg.sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Validates the service registry folder every 10 s: a failed tick means a broken"
    " change (runs keep the last good registry until it is fixed).",
)
def registry_sensor(
    context: dg.SensorEvaluationContext, registry: RegistryResource
) -> dg.SkipReason:
    directory = Path(registry.path)
    issues = validate_registry(directory)
    if issues:
        context.log.error(f"registry {directory} does not load ({len(issues)} problem(s))")
        raise BrokenRegistry(issues)
    services = sorted(p.stem for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    return dg.SkipReason(f"registry valid: {len(services)} services ({', '.join(services)})")
