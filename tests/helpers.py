"""Builders shared by tests: valid send requests and registered services."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from notify_pipeline.delivery.ses import encode_tag_value

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"
PROD_ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"
SES_EVENTS = REPO / "tests" / "data" / "ses_events"
SES_ID = "010201abc-0000-4000-8000-000000000001-000000"


def request_dict(**overrides: Any) -> dict[str, Any]:
    """A valid request for the `lookup-notices` service (token left to the caller)."""
    data: dict[str, Any] = {
        "version": 1,
        "id": "msg-1",
        "service": "lookup-notices",
        "identity_token": "token-placeholder",
        "to": ["alice@example.org"],
        "subject": "Hello",
        "text": "Hi there",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def request_bytes(**overrides: Any) -> bytes:
    return json.dumps(request_dict(**overrides)).encode()


def ses_event(name: str, *, message_id: str = "msg-1", ses_id: str = SES_ID,
           recipients: tuple[str, ...] | None = None, **details: Any) -> dict[str, Any]:
    """A documentation record for our message, optionally re-addressed and with other details."""
    record: dict[str, Any] = copy.deepcopy(json.loads((SES_EVENTS / f"{name}.json").read_text()))
    mail = record["mail"]
    mail["messageId"] = ses_id
    mail["tags"]["message_id"] = [encode_tag_value(message_id)]
    if recipients:
        mail["destination"] = list(recipients)
        key, field = _RECIPIENT_LISTS.get(record["eventType"], (None, None))
        if key:
            record[key][field] = [r if field == "recipients" else {**record[key][field][0],
                                                                      "emailAddress": r}
                                  for r in recipients]
    for key, value in details.items():
        record[SES_DETAILS[record["eventType"]]][key] = value
    return record


_RECIPIENT_LISTS = {"Bounce": ("bounce", "bouncedRecipients"),
                    "Complaint": ("complaint", "complainedRecipients"),
                    "Delivery": ("delivery", "recipients"),
                    "DeliveryDelay": ("deliveryDelay", "delayedRecipients")}
SES_DETAILS = {"Bounce": "bounce", "Complaint": "complaint", "Delivery": "delivery",
            "DeliveryDelay": "deliveryDelay"}
