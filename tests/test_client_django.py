"""The Django email backend, driven through Django's own mail API and test tools."""

from __future__ import annotations

import email
import email.policy
import os
from email.mime.application import MIMEApplication

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")

import django
from django.core import mail
from django.test import override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

from notify_pipeline.cli import process_once
from notify_pipeline.client import InvalidRequest
from notify_pipeline.client.django import (
    IDEMPOTENCY_HEADER,
    BackendMisconfigured,
    EmailBackend,
    mock_session,
)
from notify_pipeline.errors import RejectReason
from notify_pipeline.request import parse_request

django.setup()

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def project(local):
    """The Django project's settings pointed at this test's local deployment."""
    with override_settings(NOTIFY_INBOX=local.settings.inbox_dir.resolve().as_uri()):
        yield local


def queued(local):
    folder = local.settings.inbox_dir
    paths = sorted(folder.glob("*.json")) if folder.exists() else []
    return [parse_request(p.read_bytes()) for p in paths]


def rich_message(**overrides):
    kwargs = {
        "subject": "Your report", "body": "Plain report", "from_email": None,
        "to": ["alice@example.org"], "cc": ["carol@example.org"], "bcc": ["hidden@example.org"],
        "reply_to": ["desk@example.org"],
        "headers": {"X-Campaign": "q3", IDEMPOTENCY_HEADER: "report-42"},
        **overrides,
    }
    message = mail.EmailMultiAlternatives(**kwargs)
    message.attach_alternative("<p>HTML report</p>", "text/html")
    message.attach("report.csv", "a,b\n1,2\n", "text/csv")
    message.attach(MIMEApplication(b"%PDF-1.4 binary\x00", "pdf", Name="r.pdf"))
    message.notify_tags = {"kind": "report"}
    return message


def test_send_mail_queues_a_request_that_notify_process_delivers(project, sink):
    sent = mail.send_mail("Hello", "Plain body", None, ["alice@example.org"])
    assert sent == 1
    [request] = queued(project)
    assert (request.service, request.to, request.subject, request.text, request.html) == (
        "lookup-notices", ("alice@example.org",), "Hello", "Plain body", None)
    summary = process_once(project.settings)
    assert summary["delivered"] == 1 and summary["rejected"] == {}
    [raw] = project.maildir()
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == "Hello"


def test_a_rich_message_keeps_every_part_through_delivery(project, sink):
    assert rich_message().send() == 1
    [request] = queued(project)
    assert request.id == "report-42", "the idempotency header becomes the request id"
    assert request.headers == {"X-Campaign": "q3"}, "and is not passed on"
    assert (request.cc, request.bcc, request.reply_to) == (
        ("carol@example.org",), ("hidden@example.org",), ("desk@example.org",))
    assert (request.text, request.html, dict(request.tags)) == (
        "Plain report", "<p>HTML report</p>", {"kind": "report"})
    assert [(a.filename, a.content_type, a.content()) for a in request.attachments] == [
        ("report.csv", "text/csv", b"a,b\n1,2\n"),
        ("r.pdf", "application/pdf", b"%PDF-1.4 binary\x00")]

    assert process_once(project.settings)["delivered"] == 1
    [raw] = project.maildir()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert (message["Cc"], message["Reply-To"], message["X-Campaign"]) == (
        "carol@example.org", "desk@example.org", "q3")
    assert "hidden@example.org" in message["X-Original-To"]
    assert message.get_body(("plain",)).get_content().strip() == "Plain report"
    assert message.get_body(("html",)).get_content().strip() == "<p>HTML report</p>"
    parts = {p.get_filename(): p.get_content() for p in message.iter_attachments()}
    assert parts == {"report.csv": "a,b\n1,2\n", "r.pdf": b"%PDF-1.4 binary\x00"}


def test_send_mass_mail_and_get_connection_reuse_one_session(project):
    messages = [("One", "1", None, ["a@example.org"]), ("Two", "2", None, ["b@example.org"])]
    assert mail.send_mass_mail(messages) == 2
    connection = mail.get_connection()
    assert connection.send_messages([mail.EmailMessage("Three", "3", to=["c@example.org"])]) == 1
    assert sorted(r.subject for r in queued(project)) == ["One", "Three", "Two"]
    assert len({r.identity_token for r in queued(project)}) == 1, "the token is cached"


def test_an_html_only_message_is_sent_as_html(project):
    message = mail.EmailMessage("Hi", "<b>bold</b>", to=["a@example.org"])
    message.content_subtype = "html"
    message.send()
    [request] = queued(project)
    assert (request.text, request.html) == (None, "<b>bold</b>")


def test_the_services_own_address_may_be_plus_addressed(project):
    mail.send_mail("Hi", "x", "lookup+digest@notify.example.org", ["a@example.org"])
    mail.send_mail("Hi", "x", "Lookup <lookup@notify.example.org>", ["a@example.org"])
    assert sorted(str(r.from_tag) for r in queued(project)) == ["None", "digest"]


def test_the_services_local_part_at_one_of_its_custom_domains_names_that_domain(project):
    with override_settings(NOTIFY_FROM_DOMAINS=["Mail.Lookup.Example.com"]):
        mail.send_mail("One", "x", "lookup@mail.lookup.example.com", ["a@example.org"])
        mail.send_mail("Two", "x", "Lookup <lookup+digest@MAIL.lookup.example.com>",
                       ["a@example.org"])
        with pytest.raises(InvalidRequest) as info:
            mail.send_mail("Three", "x", "someone@mail.lookup.example.com", ["a@example.org"])
    assert info.value.field == "from_email"
    assert sorted((r.subject, r.from_tag, r.from_domain) for r in queued(project)) == [
        ("One", None, "mail.lookup.example.com"), ("Two", "digest", "mail.lookup.example.com")]


def test_a_domain_not_in_notify_from_domains_is_refused_before_anything_is_queued(project):
    with pytest.raises(InvalidRequest) as info:
        mail.send_mail("Hi", "x", "lookup@mail.lookup.example.com", ["a@example.org"])
    assert (info.value.field, info.value.reason) == ("from_email", RejectReason.DISALLOWED_HEADER)
    assert "NOTIFY_FROM_DOMAINS" in str(info.value)
    assert queued(project) == []


@pytest.mark.parametrize("value", ["mail.lookup.example.com", [""], [3]])
def test_notify_from_domains_must_be_a_list_of_domains(project, value):
    with override_settings(NOTIFY_FROM_DOMAINS=value), pytest.raises(BackendMisconfigured) as info:
        mail.send_mail("Hi", "x", None, ["a@example.org"])
    assert info.value.setting == "NOTIFY_FROM_DOMAINS"


@pytest.mark.parametrize(("message", "field", "reason"), [
    (lambda: mail.EmailMessage("Hi", "x", "someone@elsewhere.org", ["a@example.org"]),
     "from_email", RejectReason.DISALLOWED_HEADER),
    (lambda: mail.EmailMessage("Hi", "x", None, ["a@example.org"],
                               headers={"From": "boss@example.org"}),
     "from_email", RejectReason.DISALLOWED_HEADER),
    (lambda: mail.EmailMessage("Hi", "x", None, ["not an address"]), "to[0]",
     RejectReason.MALFORMED),
    (lambda: mail.EmailMessage("Hi", "x", None, ["a@example.org"], headers={"Sender": "x@y.z"}),
     "headers.'Sender'", RejectReason.DISALLOWED_HEADER),
    (lambda: rich_message(headers={IDEMPOTENCY_HEADER: "no spaces allowed"}), "idempotency_key",
     RejectReason.MALFORMED),
])
def test_an_invalid_message_raises_or_is_dropped_silently(project, message, field, reason):
    with pytest.raises(InvalidRequest) as info:
        message().send()
    assert (info.value.field, info.value.reason) == (field, reason)
    assert message().send(fail_silently=True) == 0
    assert queued(project) == []


def test_one_bad_message_of_several_is_skipped_when_silent(project):
    good = mail.EmailMessage("Good", "x", to=["a@example.org"])
    bad = mail.EmailMessage("Bad", "x", to=["nope"])
    assert mail.get_connection(fail_silently=True).send_messages([bad, good]) == 1
    assert [r.subject for r in queued(project)] == ["Good"]


def test_mailers_options_take_precedence_over_settings(project, tmp_path):
    """Django 6.1's MAILERS passes `alias` and the OPTIONS as keyword arguments."""
    other = tmp_path / "other" / "inbox"
    backend = EmailBackend(alias="notify", inbox=other.as_uri(), fail_silently=True)
    assert (backend.alias, backend.fail_silently) == ("notify", True)
    assert backend.send_messages([mail.EmailMessage("Hi", "x", to=["a@example.org"])]) == 1
    assert len(list(other.glob("*.json"))) == 1 and queued(project) == []


@pytest.mark.parametrize(("kwargs", "setting"), [
    ({"host": "smtp.example.org"}, "OPTIONS"),
    ({"username": "u", "password": "p"}, "auth_user"),
])
def test_options_it_cannot_honour_are_refused(project, kwargs, setting):
    with pytest.raises(BackendMisconfigured) as info:
        EmailBackend(**kwargs)
    assert info.value.setting == setting


def test_missing_settings_are_named(project):
    with override_settings(NOTIFY_SERVICE=None), pytest.raises(BackendMisconfigured) as info:
        mail.send_mail("Hi", "x", None, ["a@example.org"])
    assert info.value.setting == "NOTIFY_SERVICE"


@pytest.fixture
def django_test_environment():
    """What Django's test runner does: mail goes to the locmem backend's `mail.outbox`."""
    setup_test_environment()
    try:
        yield
    finally:
        teardown_test_environment()


def test_locmem_and_notify_see_the_same_message(project, django_test_environment):
    rich_message().send()
    [outgoing] = mail.outbox
    assert queued(project) == [], "the test runner's locmem backend caught it"
    with override_settings(EMAIL_BACKEND="notify_pipeline.client.django.EmailBackend"):
        rich_message().send()
    [request] = queued(project)
    assert (list(request.to), list(request.cc), list(request.bcc), list(request.reply_to)) == (
        outgoing.to, outgoing.cc, outgoing.bcc, outgoing.reply_to)
    assert (request.subject, request.text, request.html) == (
        outgoing.subject, outgoing.body, outgoing.alternatives[0][0])
    assert [a.filename for a in request.attachments] == ["report.csv", "r.pdf"]


def test_mock_session_validates_like_production_under_the_test_runner(
        project, django_test_environment):
    with mock_session() as mock:
        mail.send_mail("Welcome", "Hi", None, ["alice@example.org"])
        rich_message().send()
        with pytest.raises(InvalidRequest):
            mail.send_mail("Spoof", "x", "ceo@elsewhere.org", ["alice@example.org"])
    assert mail.outbox == [] and queued(project) == []
    mock.assert_sent(to="alice@example.org", subject="Welcome", count=1)
    [report] = mock.with_tag("kind", "report")
    assert report["id"] == "report-42" and "identity_token" not in report
    assert settings_backend() == LOCMEM, "the test runner's backend is back afterwards"


def settings_backend() -> str:
    from django.conf import settings

    return str(settings.EMAIL_BACKEND)
