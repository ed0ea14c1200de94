"""Daily schedules: one run a day, keyed by its UTC day."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from notify_pipeline.assets.automation import dns_records_daily
from notify_pipeline.run_retention import run_retention_daily


@pytest.mark.parametrize("schedule", [run_retention_daily, dns_records_daily])
def test_a_daily_schedule_keys_its_run_by_the_day(schedule: dg.ScheduleDefinition) -> None:
    def key(at: datetime) -> str | None:
        context = dg.build_schedule_context(scheduled_execution_time=at)
        [request] = schedule.evaluate_tick(context).run_requests or []
        return request.run_key

    assert key(datetime(2026, 12, 2, 3, 15, tzinfo=UTC)) == "2026-12-02"
    assert key(datetime(2026, 12, 2, 23, 59, tzinfo=UTC)) == "2026-12-02"  # the same day
    assert key(datetime(2026, 12, 3, 0, 0, tzinfo=UTC)) == "2026-12-03"
    assert schedule.default_status is dg.DefaultScheduleStatus.RUNNING
    assert schedule.execution_timezone == "UTC"
