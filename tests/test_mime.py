"""MIME rendering: deterministic bytes, the right multipart shapes, faithful header encoding."""

from __future__ import annotations

import email
import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import default
from email.utils import parseaddr

import pytest

from notify_pipeline.message import Attachment, Envelope
from notify_pipeline.mime import make_message_id_header, render

DATE = datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)
MID = make_message_id_header("lookup-notices", "req-1", "notify.example.org")
PDF = Attachment("report.pdf", "application/pdf", b"%PDF-1.7\x00\xff\xfe binary " * 40)
CSV = Attachment("données é.csv", "text/csv", "a,b\r\nü,ß\r\n".encode())


def envelope(**changes: object) -> Envelope:
    base = Envelope(
        service="lookup-notices",
        message_id="req-1",
        from_display="Lookup Notices",
        from_address="lookup+alerts@notify.example.org",
        to=("alice@example.org",),
        subject="Your weekly summary",
        text="Hello Alice,\nhere is your summary.\n",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def rendered(env: Envelope, message_id: str = MID) -> bytes:
    return render(env, date=DATE, message_id_header=message_id)


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(data: bytes) -> str:
    """The top-level header block, unfolded (RFC 5322 unfolding removes only the CRLF)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return re.sub(r"\r\n(?=[ \t])", "", head)


def raw_header(data: bytes, name: str) -> str:
    for line in header_block(data).split("\r\n"):
        field, _, value = line.partition(":")
        if field.lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header")


def lf(text: str) -> str:
    """Decoded text parts keep the message's CRLF line ends; the envelope has LF."""
    return text.replace("\r\n", "\n")


def rfc2047_decoded(value: str) -> str:
    """Decode with the stdlib's RFC 2047 decoder, which (unlike the modern parser) applies the
    rule that whitespace between adjacent encoded words is not part of the text."""
    return str(make_header(decode_header(value)))


FULL = envelope(
    cc=("carol@example.org",),
    bcc=("secret-auditor@example.org",),
    reply_to=("helpdesk@example.org",),
    html="<p>Hello Alice,</p><p>here is your summary.</p>",
    headers=(("X-Campaign", "weekly"), ("List-Unsubscribe", "<mailto:unsub@example.org>")),
    attachments=(PDF, CSV),
)


def test_same_inputs_give_the_same_bytes() -> None:
    assert rendered(FULL) == rendered(FULL)


def test_boundaries_follow_the_message_id() -> None:
    other = make_message_id_header("lookup-notices", "req-2", "notify.example.org")
    first, second = parsed(rendered(FULL)), parsed(rendered(FULL, other))
    assert first.get_boundary() != second.get_boundary()
    assert first.get_boundary() == parsed(rendered(FULL)).get_boundary()


def test_message_id_is_deterministic_and_distinct() -> None:
    assert make_message_id_header("lookup-notices", "req-1", "notify.example.org") == MID
    assert re.fullmatch(r"<[0-9a-f]{32}@notify\.example\.org>", MID)
    others = {
        make_message_id_header("lookup-notices", "req-2", "notify.example.org"),
        make_message_id_header("lookup", "notices:req-1", "notify.example.org"),
        make_message_id_header("lookup-notices", "req-1", "other.example.org"),
    }
    assert MID not in others and len(others) == 3
    assert parsed(rendered(FULL))["Message-ID"] == MID


def test_every_line_ends_with_crlf_and_is_7bit() -> None:
    data = rendered(FULL)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert data.isascii()
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


BODIES = ["text/plain", "text/html"]


@pytest.mark.parametrize(
    ("changes", "shape"),
    [
        ({}, ["text/plain"]),
        ({"text": None, "html": "<p>hi</p>"}, ["text/html"]),
        ({"html": "<p>hi</p>"}, ["multipart/alternative", "text/plain", "text/html"]),
        ({"attachments": (PDF,)}, ["multipart/mixed", "text/plain", "application/pdf"]),
        (
            {"html": "<p>hi</p>", "attachments": (PDF, CSV)},
            ["multipart/mixed", "multipart/alternative", *BODIES, "application/pdf", "text/csv"],
        ),
    ],
)
def test_multipart_shapes(changes: dict[str, object], shape: list[str]) -> None:
    """`shape` is every part's content type, depth first."""
    msg = parsed(rendered(envelope(**changes)))
    assert [part.get_content_type() for part in msg.walk()] == shape
    assert msg["MIME-Version"] == "1.0"
    assert all(part["MIME-Version"] is None for part in list(msg.walk())[1:])


def test_bodies_round_trip() -> None:
    env = envelope(text="Grüße,\nline two\n" + "long " * 40 + "\n", html="<p>Grüße</p>\n")
    msg = parsed(rendered(env))
    text, html = (lf(part.get_content()) for part in msg.walk() if not part.is_multipart())
    assert (text, html) == (env.text, env.html)


def test_attachments_round_trip() -> None:
    msg = parsed(rendered(FULL))
    got = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in msg.iter_attachments()
    ]
    assert got == [(a.filename, a.content_type, a.content) for a in FULL.attachments]


def test_addresses_and_extra_headers() -> None:
    msg = parsed(rendered(FULL))
    assert msg["From"].addresses[0].addr_spec == "lookup+alerts@notify.example.org"
    assert msg["From"].addresses[0].display_name == "Lookup Notices"
    assert msg["To"] == "alice@example.org"
    assert msg["Cc"] == "carol@example.org"
    assert msg["Reply-To"] == "helpdesk@example.org"
    assert msg["X-Campaign"] == "weekly"
    assert msg["List-Unsubscribe"] == "<mailto:unsub@example.org>"
    assert msg["Date"].datetime == DATE


def test_bcc_never_appears() -> None:
    data = rendered(FULL)
    assert b"secret-auditor" not in data
    assert parsed(data)["Bcc"] is None


def test_bcc_only_message_says_undisclosed_recipients() -> None:
    data = rendered(envelope(to=(), bcc=("hidden@example.org",)))
    assert raw_header(data, "To") == "undisclosed-recipients:;"
    assert b"hidden@example.org" not in data


def test_cc_only_message_has_no_to() -> None:
    data = rendered(envelope(to=(), cc=("carol@example.org",)))
    assert parsed(data)["To"] is None


def test_optional_headers_absent_when_not_given() -> None:
    msg = parsed(rendered(envelope()))
    assert msg["Cc"] is None and msg["Reply-To"] is None


@pytest.mark.parametrize(
    "name",
    [
        'Lookup, "Notices" Team',
        "Université de Cambridge — Service d\u2019information",
        "O'Brien (Helpdesk); Accounts\\Billing",
        "邮件 通知",
    ],
)
def test_display_names_are_encoded_and_round_trip(name: str) -> None:
    data = rendered(envelope(from_display=name))
    display, addr = parseaddr(raw_header(data, "From"))
    assert (rfc2047_decoded(display), addr) == (name, "lookup+alerts@notify.example.org")
    assert parsed(data)["From"].addresses[0].addr_spec == addr


WORDS = ["Héllo", "wörld", "your", "réservation", "confirmée", "中文", "邮件", "2026-11-02"]
WORDS += ["Ünïcödé", "test,", '"quoted"', "x" * 30, "Smith;", "<not>", "@home", "a"]


def test_long_non_ascii_headers_keep_every_space() -> None:
    """Regression: CPython's modern header folder loses the space between encoded words."""
    rng = random.Random(20261102)
    for _ in range(300):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))
        data = rendered(envelope(subject=text, from_display=text[:120]))
        assert header_block(data).isascii()
        assert rfc2047_decoded(raw_header(data, "Subject")) == text
        display, addr = parseaddr(raw_header(data, "From"))
        assert (rfc2047_decoded(display), addr) == (text[:120], "lookup+alerts@notify.example.org")
        assert parsed(data)["Subject"] == text


def test_boundary_never_collides_with_body_text() -> None:
    boundary = parsed(rendered(envelope(html="<p>x</p>"))).get_boundary()
    assert boundary is not None
    text = f"--{boundary}\nnot a boundary\n--{boundary}--\n"
    msg = parsed(rendered(envelope(text=text, html="<p>x</p>")))
    assert msg.get_boundary() != boundary
    assert [lf(part.get_content()) for part in msg.iter_parts()] == [text, "<p>x</p>\n"]


def test_date_keeps_its_offset_and_must_be_aware() -> None:
    cet = datetime(2026, 11, 2, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))
    assert raw_header(render(envelope(), date=cet, message_id_header=MID), "Date").endswith("+0100")
    with pytest.raises(ValueError, match="timezone-aware"):
        render(envelope(), date=datetime(2026, 11, 2), message_id_header=MID)


def test_envelope_without_body_is_refused() -> None:
    with pytest.raises(ValueError, match="text or html"):
        rendered(envelope(text=None))


# Caller text that holds RFC 2047 encoded words: CPython before 3.11.10 / 3.12.5 decodes them
# while building the header and folds any CR/LF they decode to into real header lines.
SMUGGLING = [
    "=?utf-8?q?hi=0D=0ABcc:_victim@example.org?=",
    "x =?utf-8?b?aGkNCkZyb206IGV2aWxAZXhhbXBsZS5vcmc=?= y",  # "hi\r\nFrom: evil@example.org"
    "=?utf-8?q?a=0AX-Injected:_1?= =?utf-8?q?b=0D=0A=0D=0Abody?=",
    "=?utf-8?q?caf=C3=A9?=",  # harmless, and still kept literal
]
OWN_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
               "Content-Transfer-Encoding"]


def header_names(block: str) -> list[str]:
    return [line.partition(":")[0] for line in block.split("\r\n")]


def part_header_blocks(data: bytes) -> list[str]:
    """The unfolded header block of every MIME part below the top level."""
    boundary = parsed(data).get_boundary()
    assert boundary
    chunks = data.split(f"--{boundary}\r\n".encode())[1:]
    return [re.sub(r"\r\n(?=[ \t])", "", c.split(b"\r\n\r\n", 1)[0].decode("ascii"))
            for c in chunks]


@pytest.mark.parametrize("text", SMUGGLING)
def test_encoded_words_in_the_subject_stay_literal(text: str) -> None:
    data = rendered(envelope(subject=text))
    assert sorted(header_names(header_block(data))) == sorted(OWN_HEADERS)
    assert parsed(data)["Subject"] == text


@pytest.mark.parametrize("text", SMUGGLING)
def test_encoded_words_in_a_custom_header_stay_literal(text: str) -> None:
    data = rendered(envelope(headers=(("X-Campaign", text),)))
    assert sorted(header_names(header_block(data))) == sorted([*OWN_HEADERS, "X-Campaign"])
    assert parsed(data)["X-Campaign"] == text


@pytest.mark.parametrize("text", SMUGGLING)
def test_encoded_words_in_the_display_name_stay_literal(text: str) -> None:
    data = rendered(envelope(from_display=text))
    assert sorted(header_names(header_block(data))) == sorted(OWN_HEADERS)
    display, addr = parseaddr(raw_header(data, "From"))
    assert (rfc2047_decoded(display), addr) == (text, "lookup+alerts@notify.example.org")


@pytest.mark.parametrize("text", [*SMUGGLING, "a" * 120 + SMUGGLING[0], SMUGGLING[0] + "é.txt"])
def test_encoded_words_in_a_filename_stay_literal(text: str) -> None:
    data = rendered(envelope(attachments=(Attachment(text, "text/plain", b"x"),)))
    [_, attachment] = part_header_blocks(data)
    assert sorted(header_names(attachment)) == [
        "Content-Disposition", "Content-Transfer-Encoding", "Content-Type"]
    assert all(len(line) <= 78 for line in data.split(b"\r\n") if b"filename" in line)
    [part] = parsed(data).iter_attachments()
    assert part.get_filename() == text


def test_ordinary_custom_headers_render_as_before() -> None:
    """Byte for byte what the stdlib folder writes, so signatures of ordinary mail are stable."""
    value = "weekly, with a long tail of words " * 4
    data = rendered(envelope(headers=(("X-Campaign", value),)))
    stdlib = EmailMessage(policy=default.clone(linesep="\r\n"))
    stdlib["X-Campaign"] = value
    assert stdlib.as_bytes().rstrip(b"\r\n") in data
