"""Submitted messages → send request fields (parsing only; no server)."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

import pytest

from notify_pipeline.policy import Domains
from notify_pipeline.registry import load_registry
from notify_pipeline.submission.convert import IDEMPOTENCY_PREFIX, message_fields
from notify_pipeline.submission.errors import MessageRefused, SubmissionReason

DOMAINS = Domains("notify.example.org", "email-testing.notify.example.org")
SENDER = "smtp-notices@notify.example.org"


@pytest.fixture
def service(smtp_registry):
    return load_registry(smtp_registry)["smtp-notices"]


def convert(msg: EmailMessage, service, recipients=("alice@example.org",), mail_from=SENDER):
    return message_fields(msg.as_bytes(policy=SMTP), service=service, domains=DOMAINS,
                          mail_from=mail_from, recipients=list(recipients))


def base(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Anything <{SENDER}>"
    msg["To"] = "Alice <alice@example.org>"
    msg["Subject"] = "Hello"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("plain\n")
    return msg


def test_a_multipart_message_keeps_both_bodies_and_its_attachments(service):
    msg = base()
    msg.add_alternative("<p>html</p>\n", subtype="html")
    msg.add_attachment(b"%PDF-1.4 bytes", maintype="application", subtype="pdf",
                       filename="report.pdf")
    forwarded = base()
    forwarded.replace_header("Subject", "Inner")
    msg.add_attachment(forwarded)
    fields = convert(msg, service)
    assert (fields["text"], fields["html"]) == ("plain\n", "<p>html</p>\n")
    [pdf, inner] = fields["attachments"]
    assert pdf == ("report.pdf", b"%PDF-1.4 bytes", "application/pdf")
    assert inner[2] == "message/rfc822"
    assert b"Subject: Inner" in inner[1]


def test_the_envelope_decides_who_receives_and_the_headers_where_they_show(service):
    msg = base(Cc="Bob <BOB@example.org>, not-a-recipient@example.org")
    fields = convert(msg, service, recipients=("alice@example.org", "bob@example.org",
                                               "carol@example.org"))
    assert fields["to"] == ("alice@example.org",)
    assert fields["cc"] == ("bob@example.org",)
    assert fields["bcc"] == ("carol@example.org",)


def test_headers_the_pipeline_sets_are_dropped_and_others_kept(service):
    msg = base(Received="from client by server; Mon, 1 Dec 2026 10:00:00 +0000",
               DKIM_Signature="v=1; a=rsa-sha256; d=example.org; b=abc",
               Date="Mon, 1 Dec 2026 10:00:00 +0000", Message_ID="<m1@client.example.org>",
               Sender="other@example.org", Return_Path="<x@example.org>",
               X_SES_CONFIGURATION_SET="theirs", X_Custom="kept", In_Reply_To="<m0@x.org>")
    fields = convert(msg, service)
    assert fields["headers"] == {"X-Custom": "kept", "In-Reply-To": "<m0@x.org>"}
    assert fields["idempotency_key"].startswith(IDEMPOTENCY_PREFIX)
    assert len(fields["idempotency_key"]) <= 128


def test_folded_and_encoded_headers_are_read_as_one_line(service):
    msg = base(X_Long="word " * 30)
    msg.replace_header("Subject", "Grüße aus Cambridge, " + "eine lange Zeile " * 6)
    fields = convert(msg, service)
    assert fields["subject"].startswith("Grüße aus Cambridge, eine lange Zeile")
    assert "\n" not in fields["subject"] and "\n" not in fields["headers"]["X-Long"]


def test_a_repeated_extra_header_is_refused(service):
    msg = base(X_Custom="one")
    msg["X-Custom"] = "two"
    with pytest.raises(MessageRefused) as caught:
        convert(msg, service)
    assert caught.value.reason is SubmissionReason.INVALID_MESSAGE


def test_without_a_message_id_there_is_no_idempotency_key(service):
    assert convert(base(), service)["idempotency_key"] is None


def test_the_from_header_must_be_one_of_the_services_addresses(service):
    msg = base()
    msg.replace_header("From", f"{SENDER}, lookup@notify.example.org")
    with pytest.raises(MessageRefused) as caught:
        convert(msg, service)
    assert caught.value.reason is SubmissionReason.SENDER_NOT_ALLOWED


def test_without_a_from_header_the_envelope_tag_is_used(service):
    msg = base()
    del msg["From"]
    fields = convert(msg, service, mail_from="smtp-notices+alerts@notify.example.org")
    assert fields["from_tag"] == "alerts"


def test_an_unnamed_attachment_gets_a_name(service):
    msg = base()
    msg.add_attachment(b"\x89PNG", maintype="image", subtype="png")
    [(name, _content, content_type)] = convert(msg, service)["attachments"]
    assert (name, content_type) == ("attachment-2.png", "image/png")


@pytest.mark.parametrize(("sender", "tag", "domain"), [
    ("smtp-notices@mail.smtp-notices.example.com", None, "mail.smtp-notices.example.com"),
    ("Notices <SMTP-Notices+News@Mail.SMTP-Notices.example.com>", "news",
     "mail.smtp-notices.example.com"),
    (SENDER, None, None),
])
def test_a_sender_on_a_listed_custom_domain_names_it(service, sender, tag, domain):
    msg = base()
    msg.replace_header("From", sender)
    fields = convert(msg, service)
    assert (fields["from_tag"], fields["from_domain"]) == (tag, domain)


@pytest.mark.parametrize("sender", [
    "smtp-notices@mail.other.example.com",  # a domain the service does not list
    "someone@mail.smtp-notices.example.com",  # the listed domain, another local part
    "smtp-notices+@mail.smtp-notices.example.com",  # an empty tag
])
def test_other_senders_on_custom_domains_are_refused(service, sender):
    msg = base()
    msg.replace_header("From", sender)
    with pytest.raises(MessageRefused) as caught:
        convert(msg, service)
    assert caught.value.reason is SubmissionReason.SENDER_NOT_ALLOWED
