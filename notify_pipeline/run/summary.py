"""Counts by outcome: one type for a batch's summary and for totals over many batches.

`notify process`, the delivery worker, run metadata and the benchmarks all add summaries up
with `Counts.add`, so a count added to a batch reaches every total without being listed again.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from notify_pipeline.errors import DeferReason

# How many reject sentences a batch keeps for its run's log and metadata.
MAX_REJECT_EXAMPLES = 20
# How many request ids a batch keeps per reject reason, for its summary table.
MAX_SAMPLES_PER_REASON = 3


@dataclass
class Counts:
    """Outcomes of requests; every field is summed by `add`."""

    requests: int = 0
    delivered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    bounced: int = 0
    failed: int = 0
    ambiguous: int = 0
    duplicates: int = 0
    deferred: int = 0  # left in their batch for a later attempt; `deferred_by` says why
    deferred_by: Counter[str] = field(default_factory=Counter)
    bounced_recipients: int = 0
    suppressed_recipients: int = 0
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    # reject reason -> a few request ids (or inbox keys, for requests that did not parse): the
    # first ones seen, at most MAX_SAMPLES_PER_REASON each
    reject_samples: dict[str, list[str]] = field(default_factory=dict)

    def defer(self, reason: DeferReason, count: int = 1) -> None:
        self.deferred += count
        self.deferred_by[reason.value] += count

    def add(self, other: Counts) -> None:
        """Add another summary's counts (a batch's, or totals) to these."""
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)
        self.deferred_by.update(other.deferred_by)
        for stage, seconds in other.stage_seconds.items():
            self.stage_seconds[stage] += seconds
        for reason, requests in other.reject_samples.items():
            kept = self.reject_samples.setdefault(reason, [])
            kept += requests[: MAX_SAMPLES_PER_REASON - len(kept)]

    @classmethod
    def from_counts(cls, data: Mapping[str, Any]) -> Counts:
        """The counts of a summary's or totals' `as_dict` (a run's output, a pass's JSON)."""
        counts = Counts(rejected=Counter(data["rejected"]),
                        deferred_by=Counter(data.get("deferred_by", {})),
                        reject_samples={k: list(v) for k, v in
                                        data.get("reject_samples", {}).items()})
        for name in _COUNT_FIELDS:
            setattr(counts, name, data[name])
        counts.stage_seconds.update(data["stage_seconds"])
        return counts

    def counts_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in _COUNT_FIELDS}
        data["rejected"] = dict(sorted(self.rejected.items()))
        data["deferred_by"] = dict(sorted(self.deferred_by.items()))
        data["stage_seconds"] = {
            stage: round(seconds, 4) for stage, seconds in sorted(self.stage_seconds.items())
        }
        data["reject_samples"] = {k: list(v) for k, v in sorted(self.reject_samples.items())}
        return data


_COUNT_FIELDS = tuple(
    f.name for f in fields(Counts)
    if f.name not in ("rejected", "deferred_by", "stage_seconds", "reject_samples")
)


@dataclass
class BatchSummary(Counts):
    """One batch attempt: its counts, how many events it recorded, a few reject sentences.

    `attempt` is None when another live run held the batch and this one did nothing. `limits`
    are the sending limits the batch met, as they stood after its claims (`limits.usage_row`).
    """

    batch_id: str = ""
    attempt: int | None = None
    events: int = 0  # recorded in the ledger's outbox by this batch
    reject_examples: list[str] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)

    def note_reject(self, sentence: str, *, reason: str = "", request: str = "") -> None:
        if len(self.reject_examples) < MAX_REJECT_EXAMPLES:
            self.reject_examples.append(sentence)
        samples = self.reject_samples.setdefault(reason, [])
        if request and len(samples) < MAX_SAMPLES_PER_REASON:
            samples.append(request)

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "attempt": self.attempt, **self.counts_dict(),
                "events": self.events, "limits": [dict(row) for row in self.limits]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchSummary:
        """The summary back from `as_dict` (a run's output), e.g. to add it to totals."""
        summary = cls(batch_id=data["batch_id"], attempt=data["attempt"], events=data["events"],
                      limits=[dict(row) for row in data.get("limits", [])])
        summary.add(Counts.from_counts(data))
        return summary


@dataclass
class Totals(Counts):
    """Counts over many batches, with the work around them (`events`: written to the warehouse,
    `errors`: batches or passes that raised unexpectedly)."""

    batches: int = 0
    staged: int = 0
    errors: int = 0
    events: int = 0

    def add_batch(self, summary: BatchSummary) -> None:
        self.add(summary)
        self.batches += 1

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "staged": self.staged, "errors": self.errors,
                **self.counts_dict(), "events": self.events}


@contextmanager
def timed(counts: Counts, stage: str) -> Iterator[None]:
    """Add the block's wall time to `counts.stage_seconds[stage]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        counts.stage_seconds[stage] += time.perf_counter() - start
