"""The Dagster code location: one Definitions, its graph, and the inbox sensor's contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from notify_pipeline.definitions import build_definitions
from notify_pipeline.profiles import resources_for
from notify_pipeline.sensors.inbox import inbox_sensor
from tests.helpers import REPO


def test_definitions_graph_snapshot(local):
    defs = build_definitions(local.settings)
    dg.Definitions.validate_loadable(defs)
    assert sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")) == [
        "analytics_rates", "analytics_tables", "deliver_batch", "delivery_worker",
        "dns_records_refresh", "run_retention"], "record_provider_events belongs to the gcp profile"
    assert [s.name for s in defs.sensors or []] == [
        "inbox_sensor", "registry_sensor", "services_sensor", "delivery_worker_sensor"
    ], "no provider events locally"
    job = defs.resolve_job_def("deliver_batch")
    assert [n.name for n in job.nodes_in_topological_order] == ["deliver", "record_events"]
    worker = defs.resolve_job_def("delivery_worker")
    assert [n.name for n in worker.nodes_in_topological_order] == ["work_inbox"]
    assert sorted(resources_for(local.settings)) == [
        "analytics", "deployment", "identity", "inbox", "ledger", "registry", "signing",
        "transport", "warehouse",
    ]


def test_workspace_loads_with_the_dagster_cli(local, tmp_path):
    env = {**os.environ, **local.env, "DAGSTER_HOME": str(tmp_path)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    result = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def _tick(local, **settings_overrides):
    settings = local.settings.model_copy(update=settings_overrides)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources_for(settings))
        return inbox_sensor(context)


def test_sensor_waits_until_a_batch_is_full_or_old_enough(local):
    local.enqueue(local.request(id="a"))
    result = _tick(local, batch_max_size=5, batch_max_age_seconds=3600)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason is not None
    assert "1 request(s) waiting" in (result.skip_reason.skip_message or "")
    assert list((local.home / "inbox").glob("*.json")), "nothing was staged"


def test_sensor_batches_by_size_with_deterministic_run_keys(local):
    for n in range(5):
        local.enqueue(local.request(id=f"m{n}"))
    first = _tick(local, batch_max_size=2, batch_max_age_seconds=3600)
    assert isinstance(first, dg.SensorResult)
    keys = [r.run_key for r in first.run_requests or []]
    assert len(keys) == 2, "two full batches; the fifth request waits for more or for age"
    assert all(key.endswith(".0") for key in keys)
    again = _tick(local, batch_max_size=2, batch_max_age_seconds=3600)
    assert isinstance(again, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == keys, "same state, same run keys"
    request = (first.run_requests or [])[0]
    assert request.run_config["ops"]["deliver"]["config"]["batch_id"] == request.tags[
        "notify/batch"]
