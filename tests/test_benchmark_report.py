"""The performance page's verdicts: each target is judged from the run's own figures."""

from __future__ import annotations

from typing import Any

from benchmarks.e2e import median_round
from benchmarks.report import _rounds, _starts, _targets


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


def a_round(floor: float, pipeline: float, first: str = "floor") -> dict[str, Any]:
    return {"first": first, "floor": {"per_second": floor}, "pipeline": {"per_second": pipeline}}


def test_the_figures_come_from_the_round_with_the_median_ratio() -> None:
    rounds = [a_round(500, 600), a_round(400, 300, "pipeline"), a_round(450, 450)]
    assert median_round(rounds) is rounds[2]


def test_an_even_count_of_rounds_takes_the_lower_middle_ratio() -> None:
    rounds = [a_round(100, 120), a_round(100, 80), a_round(100, 95), a_round(100, 130)]
    assert median_round(rounds) is rounds[2]
    assert median_round(rounds[:1]) is rounds[0]


def test_the_page_lists_every_round_and_marks_the_chosen_one() -> None:
    rounds = [{"first": "floor", "floor": 500.0, "pipeline": 450.0, "pipeline/floor": 0.9,
               "chosen": False},
              {"first": "pipeline", "floor": 400.0, "pipeline": 420.0, "pipeline/floor": 1.05,
               "chosen": True},
              {"first": "floor", "floor": 410.0, "pipeline": 480.0, "pipeline/floor": 1.171,
               "chosen": False}]
    text = "\n".join(_rounds(rounds))
    assert "3 alternating rounds" in text
    assert "500.0 / 450.0 msg/s = 0.9 (floor first)" in text
    assert "**400.0 / 420.0 msg/s = 1.05** (pipeline first)" in text
    assert _rounds(rounds[:1]) == []


def test_a_verdict_shows_the_ratio_with_requests_arriving_beside_it() -> None:
    e2e, latency, memory = results(floor=1.05, limit=0.35, p95=0.25, peaks=(300, 350))
    e2e["ratios"] |= {"pipeline_arriving/floor": 0.74, "pipeline_arriving/limit": 0.22}
    lines = _targets(e2e, latency, memory)
    assert any("1.05 at 10,000 messages (requests arriving meanwhile: 0.74)" in line
               for line in lines)
    assert any("0.35 at 10,000 messages (requests arriving meanwhile: 0.22)" in line
               for line in lines)
    assert verdicts(lines)["pipeline/floor >= 1.0"] == "yes"


def test_the_page_says_how_each_pipeline_part_s_requests_arrived() -> None:
    e2e = {"pipeline": {"start": "waiting", "how_requests_arrive": "all written first"},
           "pipeline_arriving": {"start": "arriving", "how_requests_arrive": "written meanwhile"}}
    text = "\n".join(_starts(e2e))
    assert "every request on disk (all written first)" in text
    assert "The last row's written meanwhile" in text
    assert _starts({"pipeline": {}}) == []
