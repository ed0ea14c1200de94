"""The send requests the analytics raise: rate alerts to technical contacts and forwarded
permanent bounces, both from the deployment's own `notify-alerts` service.

Request ids are deterministic (DESIGN.md, Analytics), so the ledger's (service, id) rule sends
each at most once however often the assets run. The caller adds the identity token.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from notify_pipeline.analytics.rates import ALERTING_LEVELS, Level, Metric, RateRow
from notify_pipeline.analytics.store import Bounce, TopReasons
from notify_pipeline.registry import AlertThresholds, Service

ALERTS_SERVICE = "notify-alerts"

_WHAT_TO_DO = {
    Metric.BOUNCE: (
        "Permanent bounces mean addresses that do not exist. Check where the service gets its"
        " addresses from (typos, stale lists, addresses of people who have left), stop sending"
        " to addresses that bounced (they are suppressed automatically for a while), and fix"
        " the source before sending more. Above the critical level the provider may pause"
        " sending for the whole deployment."
    ),
    Metric.COMPLAINT: (
        "Complaints mean recipients marked the mail as spam. Make sure every recipient expects"
        " this mail, that it says who sends it and why, and that unwanted mail is easy to stop;"
        " send less of what recipients did not ask for. Above the critical level the provider"
        " may pause sending for the whole deployment."
    ),
}


def alert_request_id(service: str, metric: Metric, level: Level, as_of: date) -> str:
    return f"alert-{service}-{metric.value}-{level.value}-{as_of.isoformat()}"


def forwarding_request_id(event_id: str) -> str:
    return f"bounce-fwd-{event_id}"


def alert_requests(service: Service, row: RateRow, reasons: TopReasons) -> list[dict[str, Any]]:
    """One request per metric at `warning` or `critical`, to the service's technical contacts."""
    return [
        _request(
            alert_request_id(service.id, metric, row.level(metric), row.as_of),
            to=service.technical_contacts,
            subject=f"{service.id}: {metric.value} rate {row.level(metric).value}"
            f" ({row.rate(metric):.2%} over {row.window_days} days)",
            text=_alert_text(service, row, metric, reasons),
            tags={"alert_for": service.id, "metric": metric.value,
                  "level": row.level(metric).value, "as_of": row.as_of.isoformat()},
        )
        for metric in Metric
        if row.level(metric) in ALERTING_LEVELS
    ]


def _thresholds(t: AlertThresholds, metric: Metric) -> tuple[float, float]:
    if metric is Metric.BOUNCE:
        return t.bounce_warning, t.bounce_critical
    return t.complaint_warning, t.complaint_critical


def _alert_text(service: Service, row: RateRow, metric: Metric, reasons: TopReasons) -> str:
    warning, critical = _thresholds(service.alerts, metric)
    top = reasons.bounce if metric is Metric.BOUNCE else reasons.complaint
    other = reasons.complaint if metric is Metric.BOUNCE else reasons.bounce
    lines = [
        f"The {metric.value} rate of {service.display_name} ({service.id}) is"
        f" {row.level(metric).value.upper()}.",
        "",
        f"Window: {row.window_days} days, {row.window_first_day} to {row.as_of} (UTC days)",
        f"Sent (recipients): {row.sent}",
        f"Permanent bounces: {row.bounced}  (bounce rate {row.bounce_rate:.4%})",
        f"Complaints: {row.complained}  (complaint rate {row.complaint_rate:.4%})",
        f"Thresholds for {metric.value}s: warning at {warning:.4%}, critical at {critical:.4%};"
        f" no verdict below {service.alerts.min_volume} sends.",
        "",
        f"Top {metric.value} reasons:",
        *_reason_lines(top),
        f"Top {'complaint' if metric is Metric.BOUNCE else 'bounce'} reasons:",
        *_reason_lines(other),
        "",
        "What to do:",
        _WHAT_TO_DO[metric],
        "",
        "This alert is sent once per service, metric, level and day. The numbers are in the"
        " bounce_rates table and on the bounce_rates asset in the Dagster UI.",
    ]
    return "\n".join(lines) + "\n"


def _reason_lines(reasons: Sequence[tuple[str, int]]) -> list[str]:
    return [f"  {n:>6}  {why}" for why, n in reasons] or ["  (none)"]


def forwarding_requests(service: Service, bounces: Sequence[Bounce]) -> list[dict[str, Any]]:
    """One request per permanent bounce, to the service's `bounce_forwarding` addresses."""
    targets = service.advanced.bounce_forwarding
    if not targets:
        return []
    return [
        _request(
            forwarding_request_id(b.event_id),
            to=targets,
            subject=f"{service.id}: permanent bounce for {b.recipient}",
            text="\n".join([
                f"A message from {service.display_name} ({service.id}) bounced permanently.",
                "",
                f"Recipient: {b.recipient}",
                f"Message id: {b.message_id}",
                f"Subject: {b.subject}",
                f"When: {b.occurred_at.isoformat()}",
                f"Bounce subtype: {b.bounce_subtype}",
                f"Diagnostic: {b.reason}",
                "",
                "The address is suppressed for a while; remove or correct it at its source.",
            ]) + "\n",
            tags={"bounce_of": service.id, "event_id": b.event_id},
        )
        for b in bounces
    ]


def _request(request_id: str, *, to: Sequence[str], subject: str, text: str,
             tags: dict[str, str]) -> dict[str, Any]:
    return {"version": 1, "id": request_id, "service": ALERTS_SERVICE, "to": list(to),
            "subject": subject, "text": text, "tags": tags}
