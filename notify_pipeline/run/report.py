"""A batch's outcomes in words a person reads: one log line, and a markdown table.

Counts by outcome and by reject reason, with a few request ids for each reason; never tokens,
bodies or anything the event table does not already hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from notify_pipeline.run.summary import BatchSummary, Counts

# (field, label) of the outcomes a table lists, in the order a reader looks for them.
OUTCOMES = (
    ("delivered", "delivered"),
    ("bounced", "bounced"),
    ("failed", "failed"),
    ("ambiguous", "ambiguous hand-off"),
    ("duplicates", "duplicate"),
    ("deferred", "deferred (retried later)"),
)


def batch_line(summary: BatchSummary) -> str:
    """`batch B: 3 requests: 2 delivered, 1 rejected (unknown_service 1)`."""
    parts = [f"{getattr(summary, name)} {_line_label(summary, name, label)}"
             for name, label in OUTCOMES if getattr(summary, name)]
    rejected = sum(summary.rejected.values())
    if rejected:
        parts.append(f"{rejected} rejected ({_by_reason(summary.rejected)})")
    if summary.suppressed_recipients:
        parts.append(f"{summary.suppressed_recipients} recipient(s) suppressed")
    outcome = ", ".join(parts) or "nothing to do"
    return f"batch {summary.batch_id}: {summary.requests} request(s): {outcome}"


def outcome_table(counts: Counts) -> str:
    """A markdown table: one row per outcome and per reject reason that occurred."""
    rows = [(label, getattr(counts, name), "") for name, label in OUTCOMES
            if getattr(counts, name)]
    rows += [(f"deferred: {reason}", n, "") for reason, n in sorted(counts.deferred_by.items())]
    for reason, n in sorted(counts.rejected.items()):
        shown = ", ".join(f"`{_cell(s)}`" for s in counts.reject_samples.get(reason, []))
        rows.append((f"rejected: {reason}", n, shown))
    if counts.suppressed_recipients:
        rows.append(("recipients suppressed", counts.suppressed_recipients, ""))
    lines = ["| outcome | count | sample requests |", "| --- | ---: | --- |"]
    lines += [f"| {label} | {n} | {shown} |" for label, n, shown in rows]
    if not rows:
        lines.append("| (no requests) | 0 | |")
    return "\n".join(lines)


def limits_table(limits: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of sending limits (`limits.usage_row` rows): used and cap per window."""
    lines = ["| counter | limit | window from (UTC) | used | cap |",
             "| --- | --- | --- | ---: | ---: |"]
    for row in limits:
        kind = str(row["limit"])
        if "warmup_day" in row:
            kind += f" (day {row['warmup_day']})"
        cap = "none" if row["cap"] is None else row["cap"]
        lines.append(f"| `{_cell(str(row['scope']))}` | {kind} | {row['window_start']} |"
                     f" {row['used']} | {cap} |")
    return "\n".join(lines)


def _line_label(summary: BatchSummary, name: str, label: str) -> str:
    """Deferrals say why, as rejects do: `2 deferred (per_day 2)`."""
    if name == "deferred" and summary.deferred_by:
        return f"deferred ({_by_reason(summary.deferred_by)})"
    return label


def _by_reason(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def _cell(text: str) -> str:
    """A request id as a table cell: it is the client's text, so no markup of its own."""
    return text.replace("`", "'").replace("|", "/").replace("\n", " ")
