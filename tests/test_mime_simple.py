"""The direct renderer of the commonest shape against the stdlib's, byte for byte.

`mime.render` writes a text-only message with plain addresses and short ASCII headers itself
(`render_simple`) and gives every other shape to `EmailMessage` (`render_stdlib`). Here both
render the same envelopes, generated around every edge of that shape (lengths at the folding
limits, quoting specials, double and outer spaces, encoded-word starts; bodies with long and
non-ASCII lines, CR and LF in any mix, in each of the three transfer encodings), and must give
the same bytes; the fast path must also be
taken where it should be, or these tests would prove nothing. Longer runs:
`NOTIFY_PROPERTY_EXAMPLES=20000 pytest tests/test_mime_simple.py`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmarks.harness import BODY
from notify_pipeline import mime
from notify_pipeline.message import Attachment, Envelope

EXAMPLES = int(os.environ.get("NOTIFY_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ATEXT = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

atom = st.text(ATEXT, min_size=1, max_size=12)
local_part = st.lists(atom, min_size=1, max_size=3).map(".".join)
label = st.builds(str.__add__, st.sampled_from("abcxyz0189"), st.text("abcxyz0189-", max_size=11))
domain = st.lists(label, min_size=2, max_size=4).map(".".join)
address = st.builds(lambda lp, d: f"{lp}@{d}", local_part, domain)
plain_atoms = st.lists(st.text("abc+_-19", min_size=1, max_size=8), min_size=1, max_size=3)
plain_address = st.builds(lambda atoms, d: f"{'.'.join(atoms)}@{d}", plain_atoms, domain)
# Header text as policy lets it through: printable ASCII, weighted towards the shapes that
# decide between the two paths (spaces, specials, "=?"), and sometimes not ASCII at all.
header_text = st.one_of(
    st.text(PRINTABLE, max_size=90),
    st.text(" aZ9,.\"()<>@;:\\=?", max_size=90),
    st.lists(st.text("abcXYZ019()!?", min_size=1, max_size=15), max_size=12).map(" ".join),
    st.text(PRINTABLE + "éü€日", max_size=40),
)
body_line = st.one_of(st.text(PRINTABLE + "\t", max_size=100),
                      st.text(PRINTABLE + "é", max_size=20))
body = st.lists(st.tuples(body_line, st.sampled_from(["\n", "\r\n", "\r"])), max_size=8).map(
    lambda parts: "".join(line + end for line, end in parts)) | st.text(PRINTABLE, max_size=200)
offset = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
date = st.builds(lambda seconds, tz: datetime.fromtimestamp(seconds, tz),
                 st.integers(0, 4_102_444_800), offset)


simple_text = st.lists(st.text("abcXYZ019()!?,.", min_size=1, max_size=10), max_size=6).map(
    " ".join)
simple_body = st.one_of(st.lists(st.text(PRINTABLE, max_size=80), max_size=5).map("\n".join),
                        body)
FIELDS = ("from_display", "from_address", "to", "cc", "reply_to", "subject", "text")


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    """Half the time every field is of the simple shape but (perhaps) one: the near misses."""
    broad = {"from_display": header_text, "from_address": st.one_of(plain_address, address),
             "to": st.lists(st.one_of(plain_address, address), max_size=4).map(tuple),
             "cc": st.lists(st.one_of(plain_address, address), max_size=2).map(tuple),
             "reply_to": st.lists(st.one_of(plain_address, address), max_size=2).map(tuple),
             "subject": header_text, "text": body}
    simple = {"from_display": simple_text, "from_address": plain_address,
              "to": st.lists(plain_address, min_size=1, max_size=2).map(tuple),
              "cc": st.lists(plain_address, max_size=1).map(tuple),
              "reply_to": st.lists(plain_address, max_size=1).map(tuple),
              "subject": simple_text, "text": simple_body}
    if draw(st.booleans()):
        odd = draw(st.sampled_from((None, *FIELDS)))
        chosen = {name: broad[name] if name == odd else simple[name] for name in FIELDS}
    else:
        chosen = broad
    return Envelope(service="lookup", message_id=draw(st.text("ab12-", min_size=1, max_size=10)),
                    **{name: draw(strategy) for name, strategy in chosen.items()})


def both(envelope: Envelope, when: datetime, domain_: str = "notify.example.org"
         ) -> tuple[bytes | None, bytes]:
    message_id = mime.make_message_id_header(envelope.service, envelope.message_id, domain_)
    return (mime.render_simple(envelope, date=when, message_id_header=message_id),
            mime.render_stdlib(envelope, date=when, message_id_header=message_id))


@SETTINGS
@given(envelopes(), date)
def test_the_direct_renderer_writes_exactly_the_stdlib_bytes(envelope: Envelope,
                                                             when: datetime) -> None:
    simple, stdlib = both(envelope, when)
    event("direct" if simple is not None else "stdlib")
    if envelope.to or envelope.cc:  # an envelope with neither cannot pass policy
        message_id = mime.make_message_id_header(envelope.service, envelope.message_id,
                                                 "notify.example.org")
        assert mime.render(envelope, date=when, message_id_header=message_id) == stdlib
    assert simple is None or simple == stdlib


@SETTINGS
@given(st.lists(plain_atoms.map(lambda atoms: f"{'.'.join(atoms[:2])}@example.org"),
                min_size=1, max_size=2),
       st.lists(st.text("abcXYZ019()!?,.", min_size=1, max_size=8), max_size=6).map(" ".join),
       st.lists(st.text(PRINTABLE, max_size=78), max_size=6).map("\n".join), date)
def test_plain_messages_take_the_direct_path(to: list[str], subject: str, text: str,
                                             when: datetime) -> None:
    envelope = Envelope(service="lookup", message_id="req-1", from_display="Lookup Notices",
                        from_address="lookup@notify.example.org", to=tuple(to), subject=subject,
                        text=text)
    simple, stdlib = both(envelope, when)
    assert simple is not None
    assert simple == stdlib


def test_the_benchmarks_message_is_direct() -> None:
    envelope = Envelope(service="lookup", message_id="bench-00001", from_display="Lookup Notices",
                        from_address="lookup@notify.example.org", to=("user1@example.org",),
                        subject="Your weekly summary (1)", text=BODY)
    simple, stdlib = both(envelope, datetime(2026, 12, 2, 18, 0, tzinfo=UTC))
    assert simple is not None
    assert simple == stdlib


def test_any_text_body_is_direct_in_the_encoding_the_stdlib_picks() -> None:
    when = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    bodies = {"7bit": "Hi\n", "quoted-printable": "x" * 79 + "\n",
              "base64": "日本語のテキスト\n" * 3}
    for cte, text in bodies.items():
        envelope = Envelope(service="lookup", message_id="r", from_display="Lookup",
                            from_address="lookup@notify.example.org", to=("a@example.org",),
                            subject="Hello", text=text)
        simple, stdlib = both(envelope, when)
        assert simple == stdlib
        assert f"Content-Transfer-Encoding: {cte}\r\n".encode() in stdlib


def test_each_edge_of_the_shape_falls_back_to_the_stdlib() -> None:
    base = Envelope(service="lookup", message_id="r", from_display="Lookup",
                    from_address="lookup@notify.example.org", to=("a@example.org",),
                    subject="Hello", text="Hi\n")
    when = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    assert both(base, when)[0] is not None
    edges = {
        "html": {"html": "<p>Hi</p>"},
        "attachment": {"attachments": (Attachment("a.txt", "text/plain", b"x"),)},
        "caller header": {"headers": (("X-Ref", "1"),)},
        "no To": {"to": (), "cc": ("a@example.org",)},
        "subject line over 76": {"subject": "s" * 68},
        "double space": {"subject": "Hello  there"},
        "encoded-word start": {"subject": "=?utf-8?q?Hi?="},
        "non-ASCII display name": {"from_display": "é"},
        "quoted local part": {"to": ('"a b"@example.org',)},
    }
    for what, change in edges.items():
        envelope = Envelope(**{**base.__dict__, **change})
        simple, stdlib = both(envelope, when)
        assert simple is None, what
        assert stdlib
