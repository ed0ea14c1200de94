"""The submission server over real SMTP on 127.0.0.1, with smtplib as the mail client."""

from __future__ import annotations

import base64
import json
import smtplib
import threading
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from notify_pipeline.defaults import MAX_REQUEST_BYTES
from notify_pipeline.request import parse_request
from notify_pipeline.submission.convert import idempotency_key
from notify_pipeline.submission.credentials import CredentialStore

SENDER = "smtp-notices@notify.example.org"


def message(sender: str = SENDER, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.org"
    msg["Subject"] = "Hello"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hi Alice")
    return msg


def plain_auth(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def test_auth_before_starttls_is_refused_with_530(submission):
    client = submission.connect(starttls=False)
    assert "auth" not in client.esmtp_features
    code, reply = client.docmd("AUTH", "PLAIN " + plain_auth(*submission.credential()))
    assert (code, reply) == (530, b"5.7.0 Must issue a STARTTLS command first")


def test_mail_before_starttls_is_refused_with_530(submission):
    client = submission.connect(starttls=False)
    code, reply = client.docmd("MAIL", f"FROM:<{SENDER}>")
    assert (code, reply) == (530, b"5.7.0 Must issue a STARTTLS command first")


def test_mail_before_auth_is_refused_with_530(submission):
    client = submission.connect()
    code, reply = client.docmd("MAIL", f"FROM:<{SENDER}>")
    assert code == 530
    assert b"Authentication required" in reply


def test_auth_plain_then_a_message_becomes_a_send_request(submission):
    client = submission.connect()
    assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
    code, _ = client.docmd("AUTH", "PLAIN " + plain_auth(*submission.credential()))
    assert code == 235
    client.send_message(message())
    [path] = submission.requests()
    request = parse_request(path.read_bytes())
    assert (request.service, request.to, request.subject) == (
        "smtp-notices", ("alice@example.org",), "Hello")
    assert request.text == "Hi Alice\n"
    assert request.from_tag is None


def test_auth_login_is_accepted(submission):
    client = submission.connect()
    client.user, client.password = submission.credential()
    code, _ = client.auth("LOGIN", client.auth_login)
    assert code == 235
    client.send_message(message())
    assert len(submission.requests()) == 1


@pytest.mark.parametrize("which", ["password", "username"])
def test_bad_credentials_get_535_and_nothing_is_accepted(submission, which):
    username, password = submission.credential()
    if which == "password":
        password = password[:-1] + ("A" if password[-1] != "A" else "B")
    else:
        username = "smtp-notices.00000000"
    client = submission.connect()
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(username, password)
    assert caught.value.smtp_code == 535
    assert client.docmd("MAIL", f"FROM:<{SENDER}>")[0] == 530


def test_repeated_failures_from_one_peer_wait_longer_each_time(submission):
    username, _ = submission.credential()
    for _attempt in range(3):
        client = submission.connect()  # a new connection each time: the peer is what counts
        assert client.docmd("AUTH", "PLAIN " + plain_auth(username, "wrong"))[0] == 535
        assert client.docmd("AUTH", "PLAIN " + plain_auth(username, "wrong"))[0] == 535
    assert submission.sleep.delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_a_service_whose_smtp_option_was_removed_cannot_authenticate(submission, smtp_registry):
    username, password = submission.credential()
    path = smtp_registry / "smtp-notices.yaml"
    path.write_text(path.read_text().replace("  smtp: true\n", ""))
    client = submission.connect()
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(username, password)
    assert caught.value.smtp_code == 535
    assert b"smtp_not_enabled" in caught.value.smtp_error
    assert submission.sleep.delays == []  # the password was right: not a guess


def test_a_revoked_credential_no_longer_authenticates(submission):
    username, password = submission.credential()
    submission.connect().login(username, password)
    assert submission.store.revoke("smtp-notices", username) == [username]
    with pytest.raises(smtplib.SMTPAuthenticationError):
        submission.connect().login(username, password)


def test_a_foreign_envelope_sender_gets_550(submission):
    client = submission.login()
    code, reply = client.docmd("MAIL", "FROM:<someone@notify.example.org>")
    assert code == 550
    assert reply.startswith(b"5.7.1 sender_not_allowed")


@pytest.mark.parametrize("sender", [
    "lookup@notify.example.org",  # another service's address
    "smtp-notices@example.org",  # the right local part on another domain
    "smtp-notices+Bad Tag@notify.example.org",
])
def test_a_foreign_from_header_gets_550_and_nothing_is_written(submission, sender):
    client = submission.login()
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(message(sender=sender), from_addr=SENDER)
    assert caught.value.smtp_code == 550
    assert caught.value.smtp_error.startswith(b"5.7.1 sender_not_allowed")
    assert submission.requests() == []


def test_a_plus_addressed_sender_becomes_the_from_tag(submission):
    client = submission.login()
    client.send_message(message(sender="SMTP Notices <smtp-notices+news@notify.example.org>"))
    [path] = submission.requests()
    assert parse_request(path.read_bytes()).from_tag == "news"


def test_a_sender_on_the_services_custom_domain_becomes_the_from_domain(submission):
    client = submission.login()
    custom = "smtp-notices@mail.smtp-notices.example.com"
    client.send_message(message(sender=f"SMTP Notices <{custom}>"), from_addr=custom)
    [path] = submission.requests()
    request = parse_request(path.read_bytes())
    assert (request.from_tag, request.from_domain) == (None, "mail.smtp-notices.example.com")


def test_a_testing_domain_service_sends_from_the_testing_domain(submission):
    client = submission.login("smtp-limited")
    ours = "smtp-limited@email-testing.notify.example.org"
    with pytest.raises(smtplib.SMTPSenderRefused):
        client.sendmail("smtp-limited@notify.example.org", ["tester@example.org"], b"x")
    msg = message(sender=ours)
    msg.replace_header("To", "tester@example.org")
    client.send_message(msg)
    assert len(submission.requests()) == 1


def test_a_recipient_off_the_allow_list_is_refused_at_rcpt(submission):
    client = submission.login("smtp-limited")
    client.mail("smtp-limited@email-testing.notify.example.org")
    code, reply = client.rcpt("stranger@example.org")
    assert code == 550
    assert reply.startswith(b"5.7.1 recipient_not_allowed")


def test_reply_to_needs_the_advanced_option(submission):
    sender = "smtp-limited@email-testing.notify.example.org"
    msg = message(sender=sender, Reply_To="help@example.org")
    msg.replace_header("To", "tester@example.org")
    with pytest.raises(smtplib.SMTPDataError) as caught:
        submission.login("smtp-limited").send_message(msg)
    assert caught.value.smtp_code == 550
    assert b"reply_to_not_enabled" in caught.value.smtp_error
    submission.login().send_message(message(Reply_To="help@example.org"))
    [path] = submission.requests()
    assert parse_request(path.read_bytes()).reply_to == ("help@example.org",)


def test_a_message_over_the_limit_gets_552(submission):
    client = submission.login()
    big = message()
    big.add_attachment(b"\0" * MAX_REQUEST_BYTES, maintype="application", subtype="octet-stream")
    with pytest.raises(smtplib.SMTPSenderRefused) as announced:  # SIZE= says so up front
        client.send_message(big)
    assert announced.value.smtp_code == 552
    client.rset()
    client.mail(SENDER)  # without SIZE= the data itself is refused
    client.rcpt("alice@example.org")
    code, _ = client.data(big.as_bytes(policy=SMTP))
    assert code == 552
    assert submission.requests() == []


def test_a_request_the_wire_format_refuses_gets_554(submission):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, "alice@example.org", "Only a PDF"
    msg.set_content(b"%PDF-1.4", maintype="application", subtype="pdf")
    with pytest.raises(smtplib.SMTPDataError) as caught:
        submission.login().send_message(msg)
    assert caught.value.smtp_code == 554
    assert b"text or html" in caught.value.smtp_error
    assert submission.requests() == []


def test_an_unavailable_inbox_gets_451_and_a_retry_succeeds(submission):
    submission.inbox.parent.mkdir(parents=True, exist_ok=True)
    submission.inbox.write_text("not a folder")
    client = submission.login()
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(message())
    assert caught.value.smtp_code == 451
    submission.inbox.unlink()
    client.send_message(message())
    assert len(submission.requests()) == 1


def test_the_message_id_makes_a_retry_the_same_request(submission):
    msg = message(Message_ID="<retry-1@client.example.org>")
    client = submission.login()
    client.send_message(msg)
    client.send_message(msg)
    ids = {json.loads(path.read_bytes())["id"] for path in submission.requests()}
    assert ids == {idempotency_key("<retry-1@client.example.org>")}


def test_one_session_sends_several_messages(submission):
    client = submission.login()
    for number in range(3):
        client.send_message(message(Subject_Line=str(number)))
    assert len(submission.requests()) == 3


def test_an_unreadable_credential_store_is_a_temporary_failure(submission):
    username, password = submission.credential()
    submission.store.path.write_text("{not json")
    code, reply = submission.connect().docmd("AUTH", "PLAIN " + plain_auth(username, password))
    assert (code, reply) == (454, b"4.7.0 Temporary authentication failure")
    assert submission.sleep.delays == []


class GatedStore(CredentialStore):
    """Holds every password check until the test lets it finish."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.entered, self.release = threading.Event(), threading.Event()

    def verify(self, username: str, password: str) -> str | None:
        self.entered.set()
        assert self.release.wait(30)
        return super().verify(username, password)


def test_a_password_check_does_not_hold_up_other_sessions(submission):
    username, password = submission.credential()
    gated = GatedStore(submission.store.path)
    submission.server.handler.credentials = gated
    other, first = submission.connect(), submission.connect()
    other.sock.settimeout(5)
    codes: list[int] = []
    login = threading.Thread(target=lambda: codes.append(first.login(username, password)[0]))
    login.start()
    try:
        assert gated.entered.wait(10)
        assert other.noop()[0] == 250  # answered while the check is still running
    finally:
        gated.release.set()
        login.join(30)
    assert codes == [235]
