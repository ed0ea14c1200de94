"""Operators' commands over the ledger: `notify retry`, `notify suppression`, `notify limits`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from notify_pipeline.cli.process import deployment_resources
from notify_pipeline.settings import Settings

if TYPE_CHECKING:
    pass



def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.run.retry import RetryOutcome, retry_batches

    with deployment_resources(settings, "ledger", "inbox") as built:
        results = retry_batches(built.inbox.open(), built.ledger, args.batches)
    for result in results:
        print(result)
    if not results:
        print("no staged batches")
    named_missing = args.batches and any(r.outcome is RetryOutcome.NOT_STAGED for r in results)
    return 1 if named_missing else 0


def cmd_suppression_list(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.events import utcnow

    with deployment_resources(settings, "ledger") as built:
        for s in built.ledger.suppressions(now=utcnow()):
            print(json.dumps({"recipient": s.recipient, "reason": s.reason,
                              "until": s.expires_at.isoformat("T", "seconds"),
                              "event_id": s.event_id}))
    return 0


def cmd_suppression_remove(args: argparse.Namespace, settings: Settings) -> int:
    with deployment_resources(settings, "ledger") as built:
        removed = built.ledger.remove_suppression(args.address)
    print(f"{args.address}: " + ("suppression lifted" if removed else "was not suppressed"))
    return 0 if removed else 1


def cmd_limits(args: argparse.Namespace, settings: Settings) -> int:
    """Each sending limit and warm-up cap in force, with what its current window has used."""
    from notify_pipeline.events import utcnow
    from notify_pipeline.limits import SendingLimits, usage_row
    from notify_pipeline.registry import load_registry

    limits = SendingLimits(settings.limit_per_minute, settings.limit_per_day,
                           settings.warmup_schedule)
    quotas = limits.quotas_of(load_registry(settings.registry).services)
    with deployment_resources(settings, "ledger") as built:
        usage = built.ledger.quota_usage(quotas, now=utcnow())
    print(json.dumps({"limits": [usage_row(u) for u in usage]}, indent=2))
    return 0
