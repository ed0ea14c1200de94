"""One tally for batches and totals: every count a batch has reaches every total."""

from __future__ import annotations

from dataclasses import fields

from notify_pipeline.run import BatchSummary, Counts, Totals

NOT_COUNTS = ("rejected", "deferred_by", "stage_seconds", "reject_samples")


def _summary(seed: int) -> BatchSummary:
    summary = BatchSummary(batch_id=f"b{seed}", attempt=1, events=seed * 3)
    for number, f in enumerate(fields(Counts), start=1):
        if f.name not in NOT_COUNTS:
            setattr(summary, f.name, seed * number)
    summary.rejected.update({"malformed": seed, "unknown_service": 1})
    summary.deferred_by.update({"per_day": seed, "warmup": 1})
    summary.stage_seconds["render"] += seed / 10
    return summary


def test_totals_add_every_count_of_every_batch():
    totals = Totals()
    totals.add_batch(_summary(1))
    totals.add_batch(_summary(2))

    expected = _summary(3)  # each count is linear in the seed
    for f in fields(Counts):
        if f.name not in NOT_COUNTS:
            assert getattr(totals, f.name) == getattr(expected, f.name), f.name
    assert totals.rejected == {"malformed": 3, "unknown_service": 2}
    assert totals.deferred_by == {"per_day": 3, "warmup": 2}
    assert round(totals.stage_seconds["render"], 6) == 0.3
    assert totals.batches == 2
    assert totals.events == 0, "totals count events written to the warehouse, not recorded"


def test_a_summary_survives_its_run_output_and_adds_up_the_same():
    summary = _summary(2)
    again = BatchSummary.from_dict(summary.as_dict())
    assert again.as_dict() == summary.as_dict()

    direct, through_output = Totals(), Totals()
    direct.add_batch(summary)
    through_output.add(Counts.from_counts(direct.as_dict()))
    through_output.batches = 1
    assert through_output.as_dict() == direct.as_dict()


def test_as_dict_names_every_count():
    data = Totals().as_dict()
    for f in fields(Totals):
        assert f.name in data, f.name
