"""The performance page's verdicts: each target is judged from the run's own figures."""

from __future__ import annotations

from typing import Any

from benchmarks.report import _targets


def results(*, floor: float, limit: float, p95: float | None,
            peaks: tuple[float, float]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    e2e = {"messages": 10_000, "quick": False,
           "ratios": {"pipeline/floor": floor, "pipeline/limit": limit, "pipeline/naive": 4.0}}
    latency = {"rate_per_second": 1.0, "delivered": 300, "messages": 300,
               "latency_seconds": {"p95": p95}}
    memory = {"runs": [{"messages": 100_000, "peak_rss_mb": peaks[1], "peak_tree_rss_mb": 500.0},
                       {"messages": 1_000, "peak_rss_mb": peaks[0], "peak_tree_rss_mb": 450.0}]}
    return e2e, latency, memory


def verdicts(lines: list[str]) -> dict[str, str]:
    rows = [line.strip("|").split(" | ") for line in lines if line.startswith("| ")][1:]
    return {what.strip(): met.strip() for what, _, met in rows}


def test_every_target_met() -> None:
    got = verdicts(_targets(*results(floor=1.2, limit=0.31, p95=0.25, peaks=(300, 350))))
    assert list(got.values()) == ["yes"] * 5


def test_each_missed_target_says_no() -> None:
    lines = _targets(*results(floor=0.99, limit=0.29, p95=1.2, peaks=(300, 361)))
    got = verdicts(lines)
    assert got["pipeline/floor >= 1.0"] == "**no**"
    assert got["pipeline/limit >= 0.30 (stretch 0.45)"] == "**no**"
    assert got["latency p95 <= 1 s at 1.0 message/s, default settings"] == "**no**"
    assert got["peak RSS flat (±20%) from 1,000 to 100,000 messages"] == "**no**"
    assert got["pipeline/naive >= 3"] == "yes"
    assert any("driver +20.3%" in line for line in lines)


def test_no_latency_figure_is_not_met() -> None:
    got = verdicts(_targets(*results(floor=1.2, limit=0.31, p95=None, peaks=(300, 350))))
    assert got["latency p95 <= 1 s at 1.0 message/s, default settings"] == "**no**"
