"""End to end: a message submitted over SMTP is delivered by `notify process`, parts intact."""

from __future__ import annotations

import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from notify_pipeline.cli import main

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def report() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Whatever the client says <smtp-notices+reports@notify.example.org>"
    msg["To"] = "Alice <alice@example.org>"
    msg["Cc"] = "bob@example.org"
    msg["Subject"] = "Monthly report ✓"
    msg["Message-ID"] = "<report-2026-12@client.example.org>"
    msg["Reply-To"] = "reports-team@example.org"
    msg["X-Report-Month"] = "2026-12"
    msg.set_content("The report is attached.\n")
    msg.add_alternative("<p>The report is <b>attached</b>.</p>\n", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return msg


def process(capsys) -> dict:
    assert main(["process"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_submitted_message_arrives_with_its_parts_and_headers(submission, sink, local, capsys):
    recipients = ["alice@example.org", "bob@example.org", "carol@example.org"]
    submission.login().send_message(report(), to_addrs=recipients)
    summary = process(capsys)
    assert (summary["delivered"], summary["rejected"], summary["failed"]) == (1, {}, 0)

    [raw] = local.maildir()
    delivered = BytesParser(policy=policy.default).parsebytes(raw)
    assert delivered["From"].addresses[0].addr_spec == "smtp-notices+reports@notify.example.org"
    assert delivered["From"].addresses[0].display_name == "SMTP Notices"
    assert [a.addr_spec for a in delivered["To"].addresses] == ["alice@example.org"]
    assert [a.addr_spec for a in delivered["Cc"].addresses] == ["bob@example.org"]
    assert "Bcc" not in delivered
    assert set(delivered["X-Original-To"].replace(" ", "").split(",")) == set(recipients)
    assert str(delivered["Subject"]) == "Monthly report ✓"
    assert str(delivered["Reply-To"]) == "reports-team@example.org"
    assert str(delivered["X-Report-Month"]) == "2026-12"
    assert "DKIM-Signature" in delivered
    assert delivered["Message-ID"] != "<report-2026-12@client.example.org>"  # the pipeline's own
    text = delivered.get_body(preferencelist=("plain",))
    html = delivered.get_body(preferencelist=("html",))
    assert text.get_content().replace("\r\n", "\n") == "The report is attached.\n"
    assert html.get_content().replace("\r\n", "\n") == "<p>The report is <b>attached</b>.</p>\n"
    [attachment] = delivered.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content_type()) == (
        "report.pdf", "application/pdf")
    assert attachment.get_content() == PDF


def test_a_client_retrying_the_same_message_is_delivered_once(submission, sink, local, capsys):
    submission.login().send_message(report())
    assert process(capsys)["delivered"] == 1
    submission.login().send_message(report())  # e.g. the first 250 was lost
    summary = process(capsys)
    assert (summary["delivered"], summary["duplicates"]) == (0, 1)
    assert len(local.maildir()) == 1
