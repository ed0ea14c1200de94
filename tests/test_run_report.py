"""A batch's outcomes as a person reads them: one log line and a markdown table."""

from __future__ import annotations

from collections import Counter

from notify_pipeline.run.report import batch_line, outcome_table
from notify_pipeline.run.summary import BatchSummary, Totals


def summary() -> BatchSummary:
    s = BatchSummary(batch_id="b1", attempt=1, requests=6, delivered=2, ambiguous=1,
                     rejected=Counter({"unknown_service": 2, "malformed": 1}))
    s.note_reject("x: unknown_service: ...", reason="unknown_service", request="welcome-1")
    s.note_reject("y: unknown_service: ...", reason="unknown_service", request="welc`|ome-2")
    s.note_reject("z.json: malformed: ...", reason="malformed", request="z.json")
    return s


def test_the_log_line_names_every_outcome_that_occurred():
    assert batch_line(summary()) == ("batch b1: 6 request(s): 2 delivered, 1 ambiguous hand-off,"
                                     " 3 rejected (malformed 1, unknown_service 2)")
    assert batch_line(BatchSummary(batch_id="b2")).endswith("0 request(s): nothing to do")


def test_the_table_counts_outcomes_and_reasons_with_sample_requests():
    s = summary()
    table = outcome_table(s).splitlines()
    assert table[:2] == ["| outcome | count | sample requests |", "| --- | ---: | --- |"]
    assert "| delivered | 2 |  |" in table
    assert "| ambiguous hand-off | 1 |  |" in table
    assert "| rejected: unknown_service | 2 | `welcome-1`, `welc'/ome-2` |" in table
    assert "| rejected: malformed | 1 | `z.json` |" in table
    assert not any("bounced" in row for row in table), "only outcomes that occurred"


def test_samples_are_capped_per_reason():
    s = BatchSummary(batch_id="b")
    for n in range(10):
        s.note_reject(f"{n}", reason="malformed", request=f"r{n}")
    assert s.reject_samples == {"malformed": ["r0", "r1", "r2"]}


def test_totals_make_a_table_too():
    totals = Totals()
    assert outcome_table(totals).endswith("| (no requests) | 0 | |")
    totals.add_batch(summary())
    totals.add_batch(summary())
    assert totals.reject_samples["unknown_service"] == ["welcome-1", "welc`|ome-2", "welcome-1"]
    assert "| rejected: unknown_service | 4 | `welcome-1`," in outcome_table(totals)
