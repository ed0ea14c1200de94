"""Policy checks, each reject reason in isolation (identity faked through our own interface)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest

from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.events import utcnow
from notify_pipeline.policy import Domains, authorise, build_envelope, split_suppressed
from notify_pipeline.registry import load_registry
from notify_pipeline.request import parse_request
from tests.helpers import PROD_ACCOUNT, REGISTRY, request_bytes

DOMAINS = Domains(main="notify.example.org", testing="email-testing.notify.example.org")


@dataclass
class Identity:
    email: str


class StaticVerifier:
    """Accepts the token "good:<email>" and refuses anything else, as unauthenticated."""

    def verify(self, token: str | None, *, received_at: datetime) -> Identity:
        if token and token.startswith("good:"):
            return Identity(token.removeprefix("good:"))
        raise RequestRejected(RejectReason.UNAUTHENTICATED, "bad token")


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY)


def envelope_for(registry, **overrides):
    overrides.setdefault("identity_token", f"good:{PROD_ACCOUNT}")
    request = parse_request(request_bytes(**overrides))
    service = authorise(request, registry=registry, verifier=StaticVerifier(),
                        received_at=utcnow())
    return build_envelope(request, service, DOMAINS)


def reason_for(registry, **overrides) -> RejectReason:
    with pytest.raises(RequestRejected) as info:
        envelope_for(registry, **overrides)
    return info.value.reason


def test_valid_request_builds_the_envelope(registry):
    env = envelope_for(registry, from_tag="reminders", bcc=["hidden@example.org"])
    assert env.from_address == "lookup+reminders@notify.example.org"
    assert env.from_display == "Lookup Notices"
    assert env.recipients == ("alice@example.org", "hidden@example.org")


def test_testing_domain_service_sends_from_the_testing_domain(registry):
    service = registry["lookup-notices-test"]
    allowed = service.allowed_recipients[0]
    env = envelope_for(registry, service="lookup-notices-test", to=[allowed],
                       identity_token=f"good:{service.service_accounts[0]}")
    assert env.from_address.endswith("@email-testing.notify.example.org")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"service": "no-such-service"}, RejectReason.UNKNOWN_SERVICE),
        ({"identity_token": "forged"}, RejectReason.UNAUTHENTICATED),
        ({"identity_token": "good:intruder@evil-1.iam.gserviceaccount.com"},
         RejectReason.UNAUTHORISED),
        ({"subject": "Hi\r\nBcc: victim@example.org"}, RejectReason.HEADER_INJECTION),
        ({"to": ["a@example.org\nBcc: b@example.org"]}, RejectReason.HEADER_INJECTION),
        ({"headers": {"X-Campaign": "a\r\nX-Other: b"}}, RejectReason.HEADER_INJECTION),
        ({"from_tag": "a\nb"}, RejectReason.HEADER_INJECTION),
        ({"headers": {"From": "ceo@example.org"}}, RejectReason.DISALLOWED_HEADER),
        ({"headers": {"dkim-signature": "v=1"}}, RejectReason.DISALLOWED_HEADER),
        ({"headers": {"Return-Path": "x@example.org"}}, RejectReason.DISALLOWED_HEADER),
        ({"headers": {"X-SES-CONFIGURATION-SET": "other"}}, RejectReason.DISALLOWED_HEADER),
        ({"headers": {"Bad Name": "v"}}, RejectReason.DISALLOWED_HEADER),
        ({"to": ["not-an-address"]}, RejectReason.MALFORMED),
        ({"from_tag": "Upper"}, RejectReason.MALFORMED),
        ({"from_tag": "a..b"}, RejectReason.MALFORMED),
    ],
)
def test_each_rule_rejects_with_its_reason(registry, overrides, reason):
    assert reason_for(registry, **overrides) is reason


def test_reply_to_needs_the_advanced_option(registry):
    hr = registry["hr-reminders"]
    assert reason_for(registry, service="hr-reminders", reply_to=["desk@example.org"],
                      identity_token=f"good:{hr.service_accounts[0]}") is (
        RejectReason.REPLY_TO_NOT_ENABLED
    )
    env = envelope_for(registry, reply_to=["desk@example.org"])  # lookup-notices enables it
    assert env.reply_to == ("desk@example.org",)


def test_allow_list_refuses_the_whole_request(registry):
    service = registry["lookup-notices-test"]
    allowed = service.allowed_recipients[0]
    with pytest.raises(RequestRejected) as info:
        envelope_for(registry, service="lookup-notices-test", to=[allowed],
                     cc=["stranger@example.org"],
                     identity_token=f"good:{service.service_accounts[0]}")
    assert info.value.reason is RejectReason.RECIPIENT_NOT_ALLOWED
    assert "stranger@example.org" in info.value.message


def test_allowed_custom_headers_pass(registry):
    env = envelope_for(registry, headers={"List-Unsubscribe": "<mailto:u@example.org>",
                                          "X-Campaign": "spring"})
    assert ("X-Campaign", "spring") in env.headers


def test_suppression_split_is_case_blind():
    kept, gone = split_suppressed(["A@Example.org", "b@example.org"], {"a@example.org"})
    assert kept == ("b@example.org",)
    assert gone == ("A@Example.org",)
