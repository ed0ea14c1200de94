"""The send request wire format: strict parsing, clear errors, no secrets in errors."""

from __future__ import annotations

import json

import pytest

from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.request import parse_request, peek
from tests.helpers import request_bytes, request_dict


def rejected(body: bytes, **kwargs) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse_request(body, **kwargs)
    return info.value


def test_valid_request_parses_with_defaults():
    req = parse_request(request_bytes(cc=["b@example.org"], tags={"campaign": "welcome"}))
    assert req.id == "msg-1"
    assert req.recipients == ("alice@example.org", "b@example.org")
    assert req.tags == {"campaign": "welcome"}
    assert "token-placeholder" not in repr(req)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"colour": "blue"}, "colour"),
        ({"version": 2}, "version"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"text": None}, "text or html"),
        ({"to": []}, "recipient"),
        ({"to": "alice@example.org"}, "to"),
        ({"subject": 5}, "subject"),
        ({"attachments": [{"filename": "a", "content_type": "text/plain",
                           "content_base64": "***"}]}, "base64"),
        ({"tags": {"bad key!": "v"}}, "tags"),
    ],
)
def test_schema_violations_are_malformed_and_name_the_field(overrides, fragment):
    err = rejected(request_bytes(**overrides))
    assert err.reason is RejectReason.MALFORMED
    assert fragment in err.message


ATTACHMENT = {"filename": "a.txt", "content_type": "text/plain", "content_base64": ""}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", True), ("version", 1.0), ("version", "1"), ("version", [1]),
        ("id", 1), ("service", True), ("identity_token", 5), ("from_tag", 1),
        ("to", ["alice@example.org", 1]), ("cc", [True]), ("bcc", [None]), ("reply_to", [{}]),
        ("subject", True), ("subject", 1.5), ("text", 1), ("html", False),
        ("headers", {"X-A": 1}), ("headers", {"X-A": None}), ("tags", {"k": 1}),
        ("tags", {"k": True}), ("attachments", [{**ATTACHMENT, "filename": 1}]),
        ("attachments", [{**ATTACHMENT, "content_type": True}]),
        ("attachments", [{**ATTACHMENT, "content_base64": 0}]),
    ],
)
def test_types_are_strict_throughout(field, value):
    err = rejected(request_bytes(**{field: value}))
    assert err.reason is RejectReason.MALFORMED
    assert field in err.message


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_or_empty_token_parses_and_is_left_to_identity(token):
    body = json.dumps({k: v for k, v in request_dict(identity_token=token).items()
                       if token is not None or k != "identity_token"}).encode()
    assert not parse_request(body).identity_token


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_non_object_bodies_are_malformed(body):
    assert rejected(body).reason is RejectReason.MALFORMED


def test_oversized_request_is_too_large():
    body = request_bytes(text="x" * 2000)
    err = rejected(body, max_bytes=1000)
    assert err.reason is RejectReason.TOO_LARGE
    assert str(len(body)) in err.message


def test_default_limit_is_ten_mebibytes():
    body = request_bytes(text="x" * (10 * 1024 * 1024))
    assert rejected(body).reason is RejectReason.TOO_LARGE


def test_errors_never_echo_the_token():
    secret = "eyJhbGciOiJSUzI1NiJ9.secret-payload.signature"
    body = json.dumps({**request_dict(identity_token=secret), "extra": secret}).encode()
    err = rejected(body)
    assert secret not in str(err)
    assert "secret-payload" not in str(err)


def test_attribution_and_recipients_of_a_broken_request():
    body = json.dumps({"service": "svc", "id": "k1", "to": ["a@example.org", 3]}).encode()
    found = peek(body)
    assert (found.service, found.message_id) == ("svc", "k1")
    assert found.recipients == ("a@example.org",)
    assert (peek(b"junk").service, peek(b"junk").message_id) == (None, None)
