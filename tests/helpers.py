"""Builders shared by tests: valid send requests and registered services."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientOutcome,
    RecipientStatus,
    Transport,
)
from notify_pipeline.delivery.ses import encode_tag_value
from notify_pipeline.identity import FileCertSource, TokenVerifier
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.policy import Domains
from notify_pipeline.registry import load_registry
from notify_pipeline.run import BatchSummary, Pipeline
from notify_pipeline.signing import DkimKeyStore, DkimSigner

if TYPE_CHECKING:
    from tests.conftest import LocalDeployment

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"
PROD_ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"
SES_EVENTS = REPO / "tests" / "data" / "ses_events"
SES_ID = "010201abc-0000-4000-8000-000000000001-000000"
MAX_BYTES = 10 * 1024 * 1024


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


class RecordingTransport(Transport):
    """Accepts every recipient and remembers each hand-off."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    def send(self, message: OutgoingMessage) -> HandoffResult:
        self.sent.append(message)
        outcomes = tuple(RecipientOutcome(r, RecipientStatus.ACCEPTED, 250)
                         for r in message.recipients)
        return HandoffResult(f"rec-{len(self.sent)}", outcomes)


@dataclass
class Harness:
    pipeline: Pipeline
    transport: Transport
    ledger: SqliteLedger

    def run(self, inbox: Inbox, batch_id: str) -> BatchSummary:
        return self.pipeline.process_batch(inbox, batch_id, owner=f"test|{os.getpid()}|0|t")


def make_harness(local: LocalDeployment, transport: Transport | None = None) -> Harness:
    """The local deployment's registry, identity and DKIM keys, a real ledger, and `transport`
    (by default one that records hand-offs) instead of a provider."""
    s = local.settings
    issuer = LocalIssuer(s.keys_dir, s.local_issuer)
    issuer.certs()  # creates the key and publishes certs.json for the verifier
    verifier = TokenVerifier(certs=FileCertSource(issuer.certs_path),
                             audience=s.deployment_audience, issuers=frozenset({s.local_issuer}))
    keys = DkimKeyStore(s.keys_dir, s.dkim_selector)
    signers: dict[str, DkimSigner] = {}
    ledger = SqliteLedger(s.ledger_path)
    transport = transport or RecordingTransport()
    pipeline = Pipeline(
        registry=load_registry(s.registry), domains=Domains(s.domain, s.testing_domain),
        verifier=verifier, ledger=ledger, transport=transport, max_request_bytes=MAX_BYTES,
        signer_for=lambda d: signers.setdefault(d, DkimSigner(keys.key_for(d))),
    )
    return Harness(pipeline, transport, ledger)


def hostile_cases(local: LocalDeployment) -> list[tuple[str, str]]:
    """(request body, expected reject reason): each one alone used to stop the whole batch or
    end as a failure after the claim."""
    def raw(**overrides: Any) -> str:
        return json.dumps(local.request(**overrides))

    huge = "1" + "0" * 5000  # beyond Python's int-string digit limit
    deep = "[" * 50_000 + "]" * 50_000
    return [
        (raw(id="h-int-version").replace('"version": 1', f'"version": {huge}'), "malformed"),
        (raw(id="h-int-extra").replace('"version": 1', f'"version": 1, "n": {huge}'),
         "malformed"),
        (raw(id="h-int-subject").replace('"subject": "Hello"', f'"subject": {huge}'),
         "malformed"),
        (raw(id="h-int-tag", tags={"k": "v"}).replace('"v"', huge), "malformed"),
        (raw(id="h-deep").replace('"version": 1', f'"version": 1, "x": {deep}'), "malformed"),
        (raw(id="h-deep-subject").replace('"subject": "Hello"', f'"subject": {deep}'),
         "malformed"),
        (raw(id="h-surrogate").replace('"Hello"', '"He\\ud800llo"'), "malformed"),
        (raw(id="h-surrogate-pair-half").replace('"Hello"', '"\\udc00"'), "malformed"),
        (raw(id="h-bool-version", version=True), "malformed"),
        (raw(id="h-float-version", version=1.0), "malformed"),
        (json.dumps({k: v for k, v in local.request(id="h-no-token").items()
                     if k != "identity_token"}), "unauthenticated"),
        (raw(id="h-empty-token", identity_token=""), "unauthenticated"),
        (raw(id="h-ew-subject", subject="=?utf-8?q?hi=0D=0ABcc:_victim@example.org?="),
         "header_injection"),
        (raw(id="h-ew-header", headers={"X-A": "=?utf-8?b?eA0KQmNjOiB2QGV4YW1wbGUub3Jn?="}),
         "header_injection"),
        (raw(id="h-vt-subject", subject="a\x0bb"), "header_injection"),
        (raw(id="h-nel-filename", attachments=[{"filename": "a\x85.txt",
                                                "content_type": "text/plain",
                                                "content_base64": ""}]), "header_injection"),
        (raw(id="h-esc-header", headers={"X-A": "a\x1b[31mb"}), "header_injection"),
        (raw(id="h-utf8-local-part", to=["用户@example.org"]), "malformed"),
    ]
