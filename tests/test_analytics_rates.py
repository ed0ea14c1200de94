"""Bounce and complaint rates and levels, computed in DuckDB's SQL: at, just under and just over
each threshold, under the volume floor, and with nothing sent."""

from __future__ import annotations

from datetime import date

import pytest

from notify_pipeline.analytics.duckdb_store import DuckDBAnalytics
from notify_pipeline.analytics.rates import Level, Metric, window_start
from notify_pipeline.registry import AlertThresholds
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse
from tests.analytics_seed import seed

AS_OF = date(2026, 11, 30)
DEFAULTS = AlertThresholds()


@pytest.fixture
def store(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.ensure_schema()
    analytics = DuckDBAnalytics(warehouse)
    analytics.ensure_tables()
    return warehouse, analytics


def _rates(store, sent, bounced=0, complained=0, thresholds=DEFAULTS, service="svc"):
    warehouse, analytics = store
    seed(warehouse, service, AS_OF, "send", sent)
    seed(warehouse, service, AS_OF, "bounce", bounced, bounce_type="Permanent")
    seed(warehouse, service, AS_OF, "complaint", complained)
    analytics.refresh_daily_stats(service)
    return analytics.compute_rates(service, AS_OF, thresholds)


@pytest.mark.parametrize(("sent", "bounced", "level"), [
    (99, 60, Level.INSUFFICIENT_VOLUME),  # under the floor, however bad
    (100, 4, Level.OK),
    (1000, 49, Level.OK),  # just under warning
    (100, 5, Level.WARNING),  # at warning
    (1000, 51, Level.WARNING),  # just over warning
    (1000, 99, Level.WARNING),  # just under critical
    (100, 10, Level.CRITICAL),  # at critical
    (1000, 101, Level.CRITICAL),  # just over critical
])
def test_bounce_levels(store, sent, bounced, level):
    row = _rates(store, sent, bounced=bounced)
    assert (row.sent, row.bounced, row.complained) == (sent, bounced, 0)
    assert row.bounce_rate == bounced / sent
    assert row.bounce_level is level
    assert row.complaint_level is (Level.INSUFFICIENT_VOLUME if sent < 100 else Level.OK)


@pytest.mark.parametrize(("sent", "complained", "level"), [
    (99, 10, Level.INSUFFICIENT_VOLUME),
    (10000, 9, Level.OK),  # just under warning (0.0009)
    (1000, 1, Level.WARNING),  # at warning (0.001)
    (10000, 11, Level.WARNING),  # just over warning
    (10000, 49, Level.WARNING),  # just under critical
    (1000, 5, Level.CRITICAL),  # at critical (0.005)
    (10000, 51, Level.CRITICAL),  # just over critical
])
def test_complaint_levels(store, sent, complained, level):
    row = _rates(store, sent, complained=complained)
    assert row.complaint_rate == complained / sent
    assert row.complaint_level is level
    assert row.bounce_level is (Level.INSUFFICIENT_VOLUME if sent < 100 else Level.OK)


def test_the_floor_is_inclusive_at_min_volume(store):
    assert _rates(store, 100, bounced=0).bounce_level is Level.OK


def test_nothing_sent_gives_zero_rates(store):
    row = _rates(store, 0, bounced=3, complained=2)
    assert (row.sent, row.bounce_rate, row.complaint_rate) == (0, 0.0, 0.0)
    assert row.bounce_level is Level.INSUFFICIENT_VOLUME
    zero_floor = AlertThresholds(min_volume=0)
    again = store[1].compute_rates("svc", AS_OF, zero_floor)
    assert (again.bounce_level, again.complaint_level) == (Level.OK, Level.OK)


def test_only_permanent_bounces_count(store):
    warehouse, _ = store
    seed(warehouse, "svc", AS_OF, "bounce", 30, bounce_type="Transient")
    seed(warehouse, "svc", AS_OF, "bounce", 30, bounce_type="Undetermined")
    row = _rates(store, 200, bounced=4)
    assert row.bounced == 4 and row.bounce_level is Level.OK


def test_registry_thresholds_apply(store):
    strict = AlertThresholds(min_volume=10, bounce_warning=0.01, bounce_critical=0.02)
    row = _rates(store, 100, bounced=1, thresholds=strict)
    assert row.bounce_level is Level.WARNING


def test_window_is_rolling_and_history_is_kept(store):
    warehouse, analytics = store
    first = window_start(AS_OF, 7)
    seed(warehouse, "svc", first, "send", 100)
    seed(warehouse, "svc", first, "bounce", 20, bounce_type="Permanent")
    seed(warehouse, "svc", first.replace(day=first.day - 1), "send", 500)  # outside the window
    analytics.refresh_daily_stats("svc")
    today = analytics.compute_rates("svc", AS_OF, DEFAULTS)
    assert (today.sent, today.bounced, today.bounce_level) == (100, 20, Level.CRITICAL)
    tomorrow = analytics.compute_rates("svc", date(2026, 12, 1), DEFAULTS)
    assert (tomorrow.sent, tomorrow.bounce_level) == (0, Level.INSUFFICIENT_VOLUME)
    analytics.compute_rates("svc", AS_OF, DEFAULTS)  # the same day again replaces its row
    history = analytics.rate_history("svc")
    assert [(r[1], r[3], r[8]) for r in history] == [
        (AS_OF, 100, "critical"), (date(2026, 12, 1), 0, "insufficient_volume")]
    assert today.level(Metric.BOUNCE) is Level.CRITICAL and today.rate(Metric.BOUNCE) == 0.2


def test_a_computed_day_reads_back(store):
    row = _rates(store, 200, bounced=30)
    assert store[1].rate_on("svc", AS_OF) == row
    assert store[1].rate_on("svc", date(2026, 1, 1)) is None
