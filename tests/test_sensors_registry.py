"""`registry_sensor`: a good registry's tick is skipped naming its services; a broken one fails."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from notify_pipeline.resources import RegistryResource
from notify_pipeline.sensors.registry import BrokenRegistry, registry_sensor
from tests.helpers import REGISTRY


def tick(folder) -> dg.SkipReason:
    with dg.build_sensor_context(resources={"registry": RegistryResource(path=str(folder))}) as c:
        return registry_sensor(c)


def test_a_valid_registry_is_a_skipped_tick_naming_its_services():
    result = tick(REGISTRY)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == ("registry valid: 4 services (hr-reminders, lookup-notices,"
                                   " lookup-notices-test, notify-alerts)")


def test_a_broken_registry_fails_the_tick_with_every_problem(tmp_path):
    folder = tmp_path / "registry"
    shutil.copytree(REGISTRY, folder)
    (folder / "my-app.yaml").write_text("id: my-app\n")
    with pytest.raises(BrokenRegistry) as info:
        tick(folder)
    text = str(info.value)
    assert text.startswith("the registry on disk does not load, so running deliveries keep the"
                           " last good one")
    assert "my-app.yaml: local_part" in text and "my-app.yaml: display_name" in text
