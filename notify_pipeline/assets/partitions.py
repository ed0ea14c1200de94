"""The `services` partitions: one key per registered service id."""


from collections.abc import Iterable

import dagster as dg

from notify_pipeline.errors import ConfigError
from notify_pipeline.registry import Service
from notify_pipeline.resources import RegistryResource

GROUP = "analytics"
services = dg.DynamicPartitionsDefinition(name="services")


def registered(registry: RegistryResource, service_id: str) -> Service:
    """The partition's service; a partition the registry no longer has is a clear error."""
    service = registry.load().get(service_id)
    if service is None:
        raise ConfigError("services", f"{service_id!r} is a partition but not a registered"
                          " service; the services sensor removes it on its next tick")
    return service


def partition_changes(current: Iterable[str], registered: Iterable[str]
                      ) -> tuple[list[str], list[str]]:
    """(to add, to delete) so the partition keys equal the registry's ids."""
    have, want = set(current), set(registered)
    return sorted(want - have), sorted(have - want)


def sync_services(instance: dg.DagsterInstance, registered: Iterable[str]
                  ) -> tuple[list[str], list[str]]:
    """Make the instance's `services` keys equal `registered`; returns (added, removed)."""
    assert services.name is not None
    added, removed = partition_changes(instance.get_dynamic_partitions(services.name), registered)
    if added:
        instance.add_dynamic_partitions(services.name, added)
    for key in removed:
        instance.delete_dynamic_partition(services.name, key)
    return added, removed
