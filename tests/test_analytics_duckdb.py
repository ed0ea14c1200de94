"""The local analytics store: per-service views, incremental daily stats (late events included),
retention, exports and the bounces to forward."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from notify_pipeline.analytics.duckdb_store import DuckDBAnalytics
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse
from tests.analytics_seed import at, seed

D1, D2, D3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)


@pytest.fixture
def warehouse(tmp_path):
    w = DuckDBWarehouse(tmp_path / "w.duckdb")
    w.ensure_schema()
    return w


@pytest.fixture
def store(warehouse):
    analytics = DuckDBAnalytics(warehouse)
    analytics.ensure_tables()
    return analytics


def test_service_events_holds_exactly_the_services_rows(warehouse, store):
    seed(warehouse, "a-svc", D1, "send", 3)
    seed(warehouse, "a-svc", D2, "delivery", 2)
    seed(warehouse, "b", D1, "send", 5)
    summary = store.refresh_service_events("a-svc")
    assert summary.table == "notify_events.events_a_svc"
    assert (summary.rows, dict(summary.by_type)) == (5, {"delivery": 2, "send": 3})
    assert summary.newest == at(D2)
    rows = warehouse.query("SELECT DISTINCT service FROM notify_events.events_a_svc")
    assert rows == [("a-svc",)]
    assert store.refresh_service_events("nobody").rows == 0


def _daily(store, service):
    return {row[1]: row[2:] for row in store.daily_rows(service)}


def test_daily_stats_counts_each_column(warehouse, store):
    for kind, n, bounce in [("send", 10, None), ("delivery", 9, None), ("bounce", 2, "Permanent"),
                            ("bounce", 3, "Transient"), ("bounce", 4, "Undetermined"),
                            ("complaint", 1, None), ("delivery_delay", 5, None),
                            ("reject", 6, None), ("failure", 7, None), ("queued", 8, None)]:
        seed(warehouse, "svc", D1, kind, n, bounce_type=bounce)
    seed(warehouse, "other", D1, "send", 99)
    refresh = store.refresh_daily_stats("svc")
    assert refresh.full and refresh.days == (D1,)
    assert _daily(store, "svc") == {D1: (10, 9, 2, 3, 1, 5, 6, 7)}


def test_an_event_counts_towards_its_utc_day_either_side_of_midnight(warehouse, store):
    edges = [datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC),
             datetime(2026, 11, 21, 0, 0, tzinfo=UTC),
             datetime(2026, 11, 21, 1, 30, tzinfo=timezone(timedelta(hours=2)))]  # 23:30 UTC
    with warehouse.connect() as con:
        for n, occurred in enumerate(edges):
            con.execute("INSERT INTO notify_events.events VALUES ($id, 'svc', $id, NULL, 'send',"
                        " 'r@example.org', $at, $at, NULL, NULL, NULL, 'Subject', '{}')",
                        {"id": f"e{n}", "at": occurred})
    store.refresh_daily_stats("svc")
    assert {day: row[0] for day, row in _daily(store, "svc").items()} == {D1: 2, D2: 1}


def test_daily_stats_refreshes_only_days_touched_since_last_time(warehouse):
    store = DuckDBAnalytics(warehouse, overlap=timedelta(0))
    base = at(D3, 20)
    seed(warehouse, "svc", D1, "send", 10, recorded_at=base)
    seed(warehouse, "svc", D2, "send", 20, recorded_at=base)
    seed(warehouse, "svc", D3, "send", 30, recorded_at=base)
    assert store.refresh_daily_stats("svc").days == (D1, D2, D3)
    assert store.refresh_daily_stats("svc").days == ()
    later = base + timedelta(hours=2)
    seed(warehouse, "svc", D1, "bounce", 4, bounce_type="Permanent", recorded_at=later)  # late
    refresh = store.refresh_daily_stats("svc")
    assert refresh.days == (D1,) and not refresh.full and refresh.watermark == later
    assert _daily(store, "svc") == {D1: (10, 0, 4, 0, 0, 0, 0, 0), D2: (20, 0, 0, 0, 0, 0, 0, 0),
                                    D3: (30, 0, 0, 0, 0, 0, 0, 0)}
    quiet = store.refresh_daily_stats("svc")
    assert quiet.days == () and quiet.watermark == later


def test_events_stamped_just_behind_the_watermark_are_counted(warehouse, store):
    base = at(D3, 20)
    seed(warehouse, "svc", D2, "send", 20, recorded_at=base)
    store.refresh_daily_stats("svc")
    slow_writer = base - timedelta(minutes=1)  # stamped before, committed after the refresh
    seed(warehouse, "svc", D1, "send", 5, recorded_at=slow_writer)
    assert store.refresh_daily_stats("svc").days == (D1,)  # D2's events: counted already
    assert [row[0] for row in _daily(store, "svc").values()] == [5, 20]


def _rebuilt(warehouse, services):
    """`daily_stats` as a refresh from scratch gives it now (a store on a copy of the file)."""
    copy = DuckDBWarehouse(warehouse.path.with_name("rebuilt.duckdb"))
    copy.path.write_bytes(warehouse.path.read_bytes())
    with copy.connect() as con:
        con.execute("DELETE FROM notify_events.analytics_watermarks")
    fresh = DuckDBAnalytics(copy)
    assert all(r.full for r in fresh.refresh_daily_stats_of(services).values())
    return {s: fresh.daily_rows(s) for s in services}


def test_rounds_of_refreshes_with_late_and_slow_events_equal_a_rebuild(warehouse, store):
    services = ["a", "b", "c"]
    days = [D1 - timedelta(days=n) for n in range(10)]
    mark = at(D3, 20)
    for i, day in enumerate(days):
        for service in services:
            seed(warehouse, service, day, "send", 10 + i, recorded_at=mark)
            seed(warehouse, service, day, "delivery", 5 + i, recorded_at=mark)
    store.refresh_daily_stats_of(services)
    for round_ in range(4):
        mark += timedelta(hours=1)
        tag = f"r{round_}"
        seed(warehouse, "a", D3, "send", 7, recorded_at=mark, tag=tag)  # today's traffic
        seed(warehouse, "b", days[2 + round_], "bounce", 2, bounce_type="Permanent",
             recorded_at=mark, tag=tag)  # late, for an old day
        seed(warehouse, "c", days[round_], "complaint", 1, recorded_at=mark, tag=tag)
        # stamped behind the watermark, committed after the refresh that set it
        seed(warehouse, "a", days[5], "delivery", 3, recorded_at=mark - timedelta(minutes=5),
             tag=tag + "slow")
        refreshes = store.refresh_daily_stats_of(services)
        assert refreshes["b"].days == (days[2 + round_],)
        assert refreshes["a"].days == (days[5], D3)
        assert {s: store.daily_rows(s) for s in services} == _rebuilt(warehouse, services)
    quiet = store.refresh_daily_stats_of(services)
    assert all(r.days == () for r in quiet.values())
    assert {s: store.daily_rows(s) for s in services} == _rebuilt(warehouse, services)


def test_a_refresh_changes_only_the_groups_new_events_touch(warehouse, store):
    """Late events for two old days of one service: only those (service, day) rows are in the
    refresh, whatever the history around them."""
    for n in range(30):
        for service in ("a", "b"):
            seed(warehouse, service, D1 - timedelta(days=n), "send", 4)
    first = store.refresh_daily_stats_of(["a", "b"])
    assert [len(first[s].days) for s in ("a", "b")] == [30, 30]
    before = {s: store.daily_rows(s) for s in ("a", "b")}
    late = at(D3, 23)
    old = [D1 - timedelta(days=20), D1 - timedelta(days=7)]
    for day in old:
        seed(warehouse, "a", day, "bounce", 1, bounce_type="Transient", recorded_at=late)
    refresh = store.refresh_daily_stats_of(["a", "b"])
    assert (refresh["a"].days, refresh["a"].rows, refresh["b"].days) == (tuple(old), 2, ())
    after = {s: store.daily_rows(s) for s in ("a", "b")}
    changed = [row for row in after["a"] if row not in before["a"]]
    assert [row[1] for row in changed] == old and after["b"] == before["b"]


def test_a_service_without_a_watermark_is_rebuilt_from_scratch(warehouse, store):
    seed(warehouse, "svc", D1, "send", 3)
    store.refresh_daily_stats("svc")
    with warehouse.connect() as con:
        con.execute("DELETE FROM notify_events.analytics_watermarks")
    again = store.refresh_daily_stats("svc")
    assert again.full and again.days == (D1,)
    assert _daily(store, "svc") == {D1: (3, 0, 0, 0, 0, 0, 0, 0)}


def test_daily_stats_of_a_service_without_events(store):
    refresh = store.refresh_daily_stats("silent")
    assert (refresh.days, refresh.watermark) == ((), None)
    assert store.daily_rows("silent") == []


def test_retention_deletes_only_the_services_old_events(warehouse, store):
    seed(warehouse, "svc", D1, "send", 3)
    seed(warehouse, "svc", D3, "send", 2)
    seed(warehouse, "other", D1, "send", 4)
    assert store.delete_expired("svc", at(D2, 0)) == 3
    assert warehouse.query("SELECT service, count(*) FROM notify_events.events"
                           " GROUP BY service ORDER BY service") == [("other", 4), ("svc", 2)]
    assert store.delete_expired("svc", at(D2, 0)) == 0


def test_export_streams_recent_rows_in_chunks(warehouse, store):
    seed(warehouse, "svc", D1, "send", 5)
    seed(warehouse, "svc", D3, "send", 7)
    seed(warehouse, "other", D3, "send", 9)
    chunks = list(store.export_rows("svc", at(D2, 0), chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert {row[1] for chunk in chunks for row in chunk} == {"svc"}
    times = [row[6] for chunk in store.export_rows("svc", at(D1, 0), newest_first=True)
             for row in chunk]
    assert times == sorted(times, reverse=True) and len(times) == 12


def test_permanent_bounces_to_forward_move_with_a_watermark(warehouse):
    store = DuckDBAnalytics(warehouse, overlap=timedelta(0))
    first = at(D3, 8)
    seed(warehouse, "svc", D1, "bounce", 2, bounce_type="Permanent", reason="550 no such user",
         recorded_at=first)
    seed(warehouse, "svc", D1, "bounce", 3, bounce_type="Transient", recorded_at=first)
    bounces, mark = store.new_permanent_bounces("svc")
    assert [b.reason for b in bounces] == ["550 no such user"] * 2 and mark == first
    store.advance_forwarding("svc", mark)
    later = first + timedelta(hours=1)
    seed(warehouse, "svc", D3, "bounce", 1, bounce_type="Permanent", recorded_at=later, tag="x")
    bounces, mark = store.new_permanent_bounces("svc")
    assert len(bounces) == 1 and bounces[0].occurred_at == at(D3) and mark == later


def test_top_reasons_in_the_window(warehouse, store):
    seed(warehouse, "svc", D3, "bounce", 3, bounce_type="Permanent", reason="550 unknown user")
    seed(warehouse, "svc", D3, "bounce", 1, bounce_type="Permanent", reason="552 mailbox full",
         tag="b")
    seed(warehouse, "svc", D3, "complaint", 2, reason="abuse")
    seed(warehouse, "svc", D1 - timedelta(days=30), "complaint", 9, reason="old")
    top = store.top_reasons("svc", D3, 7)
    assert top.bounce == [("550 unknown user", 3), ("552 mailbox full", 1)]
    assert top.complaint == [("abuse", 2)]


def test_stats_kept_before_daily_counted_are_rebuilt_once_exactly(warehouse, store):
    """A deployment from before `daily_counted`: stats and watermarks, no counted events. Its
    first refresh must not count an overlap event twice."""
    mark = at(D1, 12)
    seed(warehouse, "svc", D1, "send", 4, recorded_at=mark)
    store.refresh_daily_stats("svc")
    with warehouse.connect() as con:
        con.execute("DROP TABLE notify_events.daily_counted")
    seed(warehouse, "svc", D1, "send", 2, recorded_at=mark + timedelta(minutes=1), tag="new")
    upgraded = DuckDBAnalytics(warehouse)
    assert upgraded.refresh_daily_stats("svc").full
    assert _daily(upgraded, "svc")[D1][0] == 6
    assert {"svc": upgraded.daily_rows("svc")} == _rebuilt(warehouse, ["svc"])
