"""`run_retention`: finished runs older than the retention go, with their event logs; runs in
progress and recent ones stay. Against a real (temporary) Dagster instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from notify_pipeline.resources import DeploymentResource
from notify_pipeline.run_retention import delete_runs_before, run_retention, run_retention_daily


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="probe", status=status))
    instance.report_engine_event("probe event", run)
    return run.run_id


def test_finished_runs_before_the_cutoff_go_with_their_logs_and_live_ones_stay():
    with dg.instance_for_test() as instance:
        done = [_run(instance, s) for s in (dg.DagsterRunStatus.SUCCESS,
                                            dg.DagsterRunStatus.FAILURE,
                                            dg.DagsterRunStatus.CANCELED)]
        live = [_run(instance, s) for s in (dg.DagsterRunStatus.STARTED,
                                            dg.DagsterRunStatus.NOT_STARTED)]
        assert delete_runs_before(instance, datetime.now(UTC) - timedelta(days=1)) == 0
        deleted = delete_runs_before(instance, datetime.now(UTC) + timedelta(seconds=1))
        left = {r.run_id for r in instance.get_runs()}
        logs = [instance.all_logs(run_id) for run_id in done]
    assert deleted == 3
    assert left == set(live)
    assert logs == [[], [], []], "their event logs went too"


def test_the_job_keeps_every_run_at_0_days_and_is_scheduled_daily():
    with dg.instance_for_test() as instance:
        _run(instance, dg.DagsterRunStatus.SUCCESS)
        result = run_retention.execute_in_process(
            instance=instance, resources={"deployment": DeploymentResource(run_retention_days=0)})
        kept = instance.get_runs_count()
        week = run_retention.execute_in_process(
            instance=instance, resources={"deployment": DeploymentResource(run_retention_days=7)})
    assert result.success and result.output_for_node("purge_old_runs") == 0
    assert kept == 2, "the old run and the purge run itself"
    assert week.output_for_node("purge_old_runs") == 0, "nothing is a week old"
    assert run_retention_daily.cron_schedule == "15 3 * * *"
