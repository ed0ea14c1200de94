"""Named crash points for fault-injection tests.

`NOTIFY_CRASH_AT=<point>` (or `<point>:<n>` for the n-th time the point is reached) makes the
process kill itself with SIGKILL there: a real crash, with no exception handlers or cleanup run.
Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_POINTS = (
    "after_stage",  # sensor moved requests into a batch, before the run was requested
    "after_claim",  # messages claimed in the ledger, nothing rendered yet
    "after_sign",  # a message is rendered and signed, hand-off not begun
    "after_handoff",  # the provider accepted a message, the ledger does not know yet
    "after_record",  # the outcome is in the ledger, the inbox item not yet removed
    "after_flush",  # events are in the warehouse, the outbox not yet acknowledged
)
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    target = os.environ.get("NOTIFY_CRASH_AT")
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
