"""The client: Session to a local inbox, its validation, retries and tokens, and MockSession."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from pathlib import Path

import pytest

from notify_pipeline.cli import process_once
from notify_pipeline.client import (
    ConfigError,
    IdentityUnavailable,
    InvalidRequest,
    MockSession,
    Session,
)
from notify_pipeline.client.tokens import CachedToken, google_fetcher, token_expiry
from notify_pipeline.errors import RejectReason
from notify_pipeline.events import utcnow
from notify_pipeline.identity import FileCertSource, TokenVerifier
from notify_pipeline.request import parse_request
from tests.conftest import free_port
from tests.helpers import PROD_ACCOUNT

SERVICE = "lookup-notices"


@pytest.fixture
def inbox_url(local) -> str:
    return local.settings.inbox_dir.resolve().as_uri()


def inbox_files(local) -> list[Path]:
    folder = local.settings.inbox_dir
    return sorted(folder.iterdir()) if folder.exists() else []


def verify_token(local, token: str) -> str:
    s = local.settings
    verifier = TokenVerifier(certs=FileCertSource(local.issuer.certs_path),
                             audience=s.deployment_audience, issuers=frozenset({s.local_issuer}))
    return verifier.verify(token, received_at=utcnow()).email


def test_send_writes_one_request_the_pipeline_parses(local, inbox_url):
    session = Session(SERVICE, inbox_url, service_account=PROD_ACCOUNT)
    request_id = session.send(
        to="alice@example.org", cc=["carol@example.org"], bcc=("hidden@example.org",),
        reply_to="help@example.org", subject="Hello", text="Hi", html="<p>Hi</p>",
        headers={"X-Campaign": "w1"}, tags={"kind": "welcome"}, from_tag="news",
        attachments=[("a.pdf", b"%PDF-1.4 \x00\xff", "application/pdf")],
    )
    [path] = inbox_files(local)
    request = parse_request(path.read_bytes())
    assert request.id == request_id and len(request_id) == 32
    assert (request.to, request.cc, request.bcc, request.reply_to) == (
        ("alice@example.org",), ("carol@example.org",), ("hidden@example.org",),
        ("help@example.org",))
    assert (request.text, request.html, request.from_tag) == ("Hi", "<p>Hi</p>", "news")
    assert request.headers == {"X-Campaign": "w1"} and request.tags == {"kind": "welcome"}
    assert request.attachments[0].content() == b"%PDF-1.4 \x00\xff"
    assert verify_token(local, request.identity_token) == PROD_ACCOUNT
    assert not list(path.parent.glob(".*")), "no temporary file is left behind"


def test_idempotency_key_is_the_request_id(local, inbox_url):
    session = Session(SERVICE, inbox_url, service_account=PROD_ACCOUNT)
    assert session.send(to="a@example.org", subject="s", text="t", idempotency_key="k:1") == "k:1"
    assert parse_request(inbox_files(local)[0].read_bytes()).id == "k:1"


def test_the_service_account_defaults_to_the_registered_one(local, inbox_url):
    Session(SERVICE, inbox_url).send(to="a@example.org", subject="s", text="t")
    token = parse_request(inbox_files(local)[0].read_bytes()).identity_token
    assert verify_token(local, token) == PROD_ACCOUNT


def test_without_notify_home_the_keys_live_beside_the_inbox_folder(local, monkeypatch):
    url = local.settings.inbox_dir.resolve().as_uri()
    monkeypatch.delenv("NOTIFY_HOME")
    Session(SERVICE, url).send(to="a@example.org", subject="s", text="t")
    monkeypatch.setenv("NOTIFY_HOME", str(local.home))
    token = parse_request(inbox_files(local)[0].read_bytes()).identity_token
    assert verify_token(local, token) == PROD_ACCOUNT


BAD_REQUESTS = [
    ({"to": "not-an-address"}, "to[0]", RejectReason.MALFORMED),
    ({"to": []}, "to", RejectReason.MALFORMED),
    ({"to": [3]}, "to[0]", RejectReason.MALFORMED),
    ({"text": None}, "text", RejectReason.MALFORMED),
    ({"subject": "a\r\nBcc: x@example.org"}, "subject", RejectReason.HEADER_INJECTION),
    ({"headers": {"Sender": "x@example.org"}}, "headers.'Sender'", RejectReason.DISALLOWED_HEADER),
    ({"headers": {"X-Notify-Id": "1"}}, "headers.'X-Notify-Id'", RejectReason.DISALLOWED_HEADER),
    ({"idempotency_key": "has space"}, "idempotency_key", RejectReason.MALFORMED),
    ({"tags": {"bad key": "v"}}, "tags.bad key.[key]", RejectReason.MALFORMED),
    ({"attachments": [("a.txt", "text", "text/plain")]}, "attachments[0].content",
     RejectReason.MALFORMED),
    ({"attachments": [("a.txt", b"x", "not a type")]}, "attachments[0].content_type",
     RejectReason.MALFORMED),
    ({"attachments": [("big.bin", b"\0" * (8 * 1024 * 1024), "application/octet-stream")]},
     "attachments", RejectReason.TOO_LARGE),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_REQUESTS)
def test_a_bad_request_names_its_field_and_writes_nothing(local, inbox_url, change, field,
                                                          reason):
    kwargs = {"to": "alice@example.org", "subject": "s", "text": "t", **change}
    for session in (Session(SERVICE, inbox_url, service_account=PROD_ACCOUNT),
                    MockSession(SERVICE)):
        with pytest.raises(InvalidRequest) as info:
            session.send(**kwargs)
        assert isinstance(info.value, ValueError)
        assert (info.value.field, info.value.reason) == (field, reason)
    assert inbox_files(local) == []


@pytest.mark.parametrize(("args", "kwargs", "setting"), [
    ((SERVICE, "http://example.org/inbox"), {}, "inbox"),
    ((SERVICE, "gs://bucket/no-slash"), {}, "inbox"),
    ((SERVICE, "pubsub://projects/p/subscriptions/s"), {}, "inbox"),
    (("Not A Service", "file:///tmp/inbox"), {}, "service"),
    (("nobody", "file:///tmp/inbox"), {}, "service_account"),
])
def test_configuration_errors_name_the_setting(local, args, kwargs, setting):
    with pytest.raises(ConfigError) as info:
        Session(*args, **kwargs)
    assert info.value.setting == setting


def test_an_unwritable_inbox_is_a_configuration_error(local, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    session = Session(SERVICE, (blocker / "inbox").as_uri(), service_account=PROD_ACCOUNT)
    with pytest.raises(ConfigError) as info:
        session.send(to="a@example.org", subject="s", text="t")
    assert info.value.setting == "inbox"


class FlakyTokens:
    """Our own TokenSource interface, failing the first `failures` calls."""

    def __init__(self, token: str, failures: int) -> None:
        self.token_value, self.failures, self.calls = token, failures, 0

    def token(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise IdentityUnavailable("metadata server did not answer")
        return self.token_value


def test_transient_failures_are_retried_with_a_bound(local, inbox_url):
    tokens = FlakyTokens(local.token(), failures=2)
    session = Session(SERVICE, inbox_url, token_source=tokens, max_attempts=3)
    session.send(to="a@example.org", subject="s", text="t")
    assert tokens.calls == 3 and len(inbox_files(local)) == 1

    tokens = FlakyTokens(local.token(), failures=5)
    session = Session(SERVICE, inbox_url, token_source=tokens, max_attempts=3)
    with pytest.raises(IdentityUnavailable):
        session.send(to="a@example.org", subject="s", text="t")
    assert tokens.calls == 3 and len(inbox_files(local)) == 1


def test_cached_token_is_reused_until_shortly_before_expiry(local):
    now = [1_000_000.0]
    minted: list[str] = []

    def fetch() -> str:
        token = local.issuer.mint(service_account=PROD_ACCOUNT, audience="aud", ttl_seconds=600,
                                  now=_at(now[0]))
        minted.append(token)
        return token

    cache = CachedToken(fetch, refresh_margin_seconds=60, clock=lambda: now[0])
    first = cache.token()
    now[0] += 539
    assert cache.token() == first and len(minted) == 1
    now[0] += 1  # 60 s before exp
    second = cache.token()
    assert len(minted) == 2 and token_expiry(second) == 1_000_540 + 600
    assert first not in repr(cache) and second not in repr(cache)


def _at(timestamp: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def test_a_token_without_expiry_is_refused():
    cache = CachedToken(lambda: "e30.e30.sig")  # {} . {}
    with pytest.raises(IdentityUnavailable):
        cache.token()


def test_without_credentials_google_tokens_name_the_setting(monkeypatch, tmp_path):
    # Keep google-auth on loopback: the metadata server address points at a closed port.
    port = free_port()
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{port}")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        google_fetcher(audience="https://notify.example.org")()
    assert info.value.setting == "GOOGLE_APPLICATION_CREDENTIALS"


def test_session_delivers_every_part_end_to_end(local, sink, inbox_url):
    session = Session(SERVICE, inbox_url, service_account=PROD_ACCOUNT)
    session.send(to=["alice@example.org"], cc="carol@example.org", bcc="hidden@example.org",
                 reply_to="help@example.org", subject="Report", text="See attached",
                 html="<p>See attached</p>", attachments=[("r.csv", b"a,b\n1,2\n", "text/csv")],
                 idempotency_key="rep-1", from_tag="reports")
    session.send(to="alice@example.org", subject="Report", text="again", idempotency_key="rep-1")
    summary = process_once(local.settings)
    assert (summary["delivered"], summary["duplicates"], summary["rejected"]) == (1, 1, {})
    [raw] = local.maildir()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"].addresses[0].addr_spec.startswith("lookup+reports@")
    assert (message["Cc"], message["Reply-To"]) == ("carol@example.org", "help@example.org")
    assert "hidden@example.org" in message["X-Original-To"], "Bcc is an envelope recipient"
    del message["X-Original-To"]
    assert "hidden@example.org" not in str(message), "and never appears in the message"
    body = message.get_body(("plain",)).get_content()
    assert body.strip() == "See attached"
    assert message.get_body(("html",)).get_content().strip() == "<p>See attached</p>"
    [attachment] = list(message.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("r.csv", "a,b\n1,2\n")


def test_mock_session_records_the_wire_format_without_a_token():
    mock = MockSession(SERVICE)
    first = mock.send(to="alice@example.org", subject="Welcome", text="Hi",
                      tags={"campaign": "welcome"}, attachments=[("a.txt", b"hi", "text/plain")])
    mock.send(to=["bob@example.org"], cc="Alice@Example.org", subject="Digest", html="<p>d</p>",
              idempotency_key="digest-1")
    assert "identity_token" not in mock.sent[0]
    assert mock.sent[0]["id"] == first and mock.sent[0]["version"] == 1
    assert mock.sent[0]["attachments"] == [{"filename": "a.txt", "content_type": "text/plain",
                                            "content_base64": base64.b64encode(b"hi").decode()}]
    assert [r["id"] for r in mock.sent_to("alice@example.org")] == [first, "digest-1"]
    assert mock.with_subject("Digest") == [mock.last]
    assert mock.with_tag("campaign", "welcome") == [mock.sent[0]]
    assert mock.assert_sent(to="bob@example.org", subject="Digest", count=1) == [mock.last]
    with pytest.raises(AssertionError, match=r"expected any request.*Welcome"):
        mock.assert_sent(to="bob@example.org", tag=("campaign", "welcome"))
    json.dumps(mock.sent)  # plain data, as the wire format defines it
    mock.clear()
    mock.assert_nothing_sent()


def test_enqueue_names_where_the_request_went_and_where_rejections_go(local, capsys):
    from notify_pipeline.cli import main

    folder = local.home / "elsewhere" / "inbox"
    code = main(["enqueue", "--service", SERVICE, "--to", "a@example.org", "--subject", "s",
                 "--text", "t", "--id", "e1", "--inbox", folder.as_uri()])
    out, err = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert Path(report["path"]).parent == folder
    assert Path(report["path"]).name.endswith(f"-{SERVICE}--e1.json")
    assert report["rejected"] == str((local.home / "rejected").resolve())
    assert "a rejection would appear in" in err
    request = parse_request(Path(report["path"]).read_bytes())
    assert verify_token(local, request.identity_token) == PROD_ACCOUNT


def test_enqueue_reports_a_bad_request_without_writing(local, capsys):
    from notify_pipeline.cli import main

    code = main(["enqueue", "--service", SERVICE, "--to", "not-an-address", "--subject", "s",
                 "--text", "t"])
    assert code == 2
    assert "to[0]" in capsys.readouterr().err
    assert inbox_files(local) == []
