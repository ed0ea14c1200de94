"""Operators' commands over the ledger: `notify retry` and `notify suppression`."""

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
