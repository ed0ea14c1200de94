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


CONTROLS = ["\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\x01", "\x1e"]
ENCODED_BREAKS = [
    "=?utf-8?q?hi=0D=0ABcc:_victim@example.org?=",
    "=?UTF-8?B?aGkNCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=",
    "=?iso-8859-1?q?a=85b?=",  # NEL, a C1 control in latin-1
    "=?utf-8*en?q?a=0Ab?=",  # RFC 2231 language tag
    "=?x-unknown?q?a=0Db?=",
    "x =?utf-8?b?aGkK?= y",  # LF
    "=?utf-8?b?aGkK=?=",  # base64 with a stray character
]


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("field", ["subject", "header", "filename", "to"])
def test_control_characters_in_header_bound_fields_are_header_injection(registry, control, field):
    text = f"a{control}b"
    overrides = {
        "subject": {"subject": text},
        "header": {"headers": {"X-Campaign": text}},
        "filename": {"attachments": [{"filename": text, "content_type": "text/plain",
                                      "content_base64": ""}]},
        "to": {"to": [f"a{control}b@example.org"]},
    }[field]
    assert reason_for(registry, **overrides) is RejectReason.HEADER_INJECTION


@pytest.mark.parametrize("encoded", ENCODED_BREAKS)
@pytest.mark.parametrize("field", ["subject", "header", "filename"])
def test_encoded_words_that_decode_to_controls_are_header_injection(registry, encoded, field):
    overrides = {
        "subject": {"subject": encoded},
        "header": {"headers": {"X-Campaign": encoded}},
        "filename": {"attachments": [{"filename": encoded, "content_type": "text/plain",
                                      "content_base64": ""}]},
    }[field]
    with pytest.raises(RequestRejected) as info:
        envelope_for(registry, **overrides)
    assert info.value.reason is RejectReason.HEADER_INJECTION
    assert "encoded word" in info.value.message


def test_tabs_and_harmless_encoded_words_pass(registry):
    env = envelope_for(registry, subject="a\tb =?utf-8?q?caf=C3=A9?=",
                       headers={"X-Campaign": "=?utf-8?b?aGk=?= =?utf-8?b?4oKs?="})  # "hi €"
    assert env.subject == "a\tb =?utf-8?q?caf=C3=A9?="


@pytest.mark.parametrize("address", ["用户@example.org", "=?utf-8?q?abc?=@example.org"])
@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to"])
def test_addresses_a_header_cannot_carry_are_malformed_at_policy_time(registry, address, field):
    with pytest.raises(RequestRejected) as info:
        envelope_for(registry, **{field: [address]})
    assert info.value.reason is RejectReason.MALFORMED
    assert f"{field}[0]" in info.value.message


def test_international_domains_are_sent_in_their_ascii_form(registry):
    env = envelope_for(registry, to=["anna@bücher.example"], cc=["Bob@Example.org"])
    assert env.to == ("anna@xn--bcher-kva.example",)
    assert env.cc == ("Bob@Example.org",), "ASCII addresses stay exactly as written"


@pytest.mark.parametrize(("address", "allowed"), [
    ("tester@example.org", True),
    ("tester@EXAMPLE.org", True),
    ("Tester@example.org", False),
    ("TESTER@EXAMPLE.ORG", False),
])
def test_allow_list_compares_domains_case_blind_and_local_parts_as_written(
    registry, address, allowed
):
    service = registry["lookup-notices-test"]
    build = lambda: envelope_for(registry, service="lookup-notices-test",  # noqa: E731
                                 to=[address], identity_token=f"good:{service.service_accounts[0]}")
    if allowed:
        assert build().to == (address,)
    else:
        with pytest.raises(RequestRejected) as info:
            build()
        assert info.value.reason is RejectReason.RECIPIENT_NOT_ALLOWED
