"""`service_configuration`: the service's registry entry, as a table its technical principals
read."""


from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from notify_pipeline.analytics.access import AccessNotApplied, configuration_access_plan
from notify_pipeline.analytics.service_config import (
    BigQueryConfigTables,
    ConfigRow,
    DuckDBConfigTables,
)
from notify_pipeline.assets.partitions import GROUP, registered, services
from notify_pipeline.assets.resource import AnalyticsResource
from notify_pipeline.errors import ConfigError
from notify_pipeline.events import utcnow
from notify_pipeline.resources import (
    BigQueryWarehouseResource,
    DeploymentResource,
    DuckDBWarehouseResource,
    RegistryResource,
    WarehouseResource,
)
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse


@dg.asset(partitions_def=services, group_name=GROUP, kinds={"table"},
          check_specs=[dg.AssetCheckSpec(
              "configuration_access", asset="service_configuration",
              description="In gcp, the service's technical principals may read its"
              " configuration table (and no other service's). Locally it is only shown.")])
def service_configuration(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                          registry: RegistryResource, deployment: DeploymentResource,
                          analytics: AnalyticsResource) -> Iterator[Any]:
    """The service's configuration `notify_events.config_<service id with - as _>`: one row
    with its registry entry (every default filled in, no secrets: the registry holds none) and
    its From address. In gcp its technical principals get read access to this table only."""
    service = registered(registry, context.partition_key)
    row = ConfigRow.of(service, deployment.domains)
    metadata: dict[str, Any] = {}
    problem, applied = "", False
    if isinstance(warehouse, BigQueryWarehouseResource):
        tables = BigQueryConfigTables(warehouse.bigquery.make_client(), warehouse.dataset)
        written = tables.write(row, utcnow())
        grants = configuration_access_plan(service, written.table)
        try:
            if analytics.apply_access:
                tables.grant(written.table, grants)  # changes nothing when already in force
                applied = True
        except AccessNotApplied as exc:
            problem = str(exc)
            context.log.warning(f"configuration access not applied: {problem}")
            metadata["access_error"] = dg.MetadataValue.text(problem)
    elif isinstance(warehouse, DuckDBWarehouseResource):
        written = DuckDBConfigTables(DuckDBWarehouse(Path(warehouse.path))).write(row, utcnow())
        grants = configuration_access_plan(service, written.table)
    else:
        raise ConfigError("warehouse", f"no configuration table for {type(warehouse).__name__}")
    metadata.update({
        "dagster/table_name": dg.MetadataValue.text(written.table),
        "changed": dg.MetadataValue.bool(written.changed),
        "from_address": dg.MetadataValue.text(row.from_address),
        "access_plan": dg.MetadataValue.json([g.as_dict() for g in grants]),
        "access_applied": dg.MetadataValue.bool(applied),
    })
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="configuration_access", passed=not problem,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"applied": dg.MetadataValue.bool(applied),
                  "grants": dg.MetadataValue.int(len(grants))})
