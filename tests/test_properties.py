"""Property-based tests over the wire format and every header-bound field.

Whatever a caller sends (any Unicode, any control character, RFC 2047 encoded-word shapes, any
JSON type in any field, bytes that are not JSON at all): deciding never raises; an accepted
request renders; the rendered message carries exactly the header lines we own plus the
caller's allowed extra headers, none of them holding a line break once decoded; and its DKIM
signature verifies against our own DNS records.

About 200 examples per property by default, so the suite stays fast. For a longer run:
`NOTIFY_PROPERTY_EXAMPLES=20000 pytest tests/test_properties.py`.
"""

from __future__ import annotations

import base64
import email
import json
import os
import quopri
import re
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notify_pipeline.dns import DnsRecord, dns_records, verify
from notify_pipeline.identity import FileCertSource, TokenVerifier
from notify_pipeline.inbox.base import InboxItem
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.message import Envelope
from notify_pipeline.mime import make_message_id_header, render
from notify_pipeline.policy import Domains
from notify_pipeline.registry import load_registry
from notify_pipeline.run.decide import Accepted, Rejected, Rules, decide
from notify_pipeline.signing import DkimKeyStore, DkimSigner
from tests.helpers import MAX_BYTES, PROD_ACCOUNT, REGISTRY, request_dict

EXAMPLES = int(os.environ.get("NOTIFY_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DOMAINS = Domains("notify.example.org", "email-testing.notify.example.org")
AUDIENCE = "https://notify.example.org"
ISSUER = "https://notify.example.org/local-issuer"
SELECTOR = "notify1"
DATE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PLACEHOLDER = request_dict()["identity_token"].encode()

# Headers a rendered message may carry at the top level, each at most once; the caller's extra
# headers come on top. A body part may carry only its own three.
OWN = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
       "content-type", "content-transfer-encoding"}
PART_OWN = {"content-type", "content-transfer-encoding", "content-disposition"}


class World:
    """What deciding, rendering and verifying need; its repr shows no token nor key."""

    def __init__(self, rules: Rules, token: str, signers: dict[str, DkimSigner],
                 records: list[DnsRecord]) -> None:
        self.rules, self.token, self.signers, self.records = rules, token, signers, records

    def __repr__(self) -> str:
        return "World()"

    @classmethod
    def build(cls, keys_dir: Path) -> World:
        """A local issuer and DKIM keys under `keys_dir`, the example registry, a valid token."""
        issuer = LocalIssuer(keys_dir, ISSUER)
        issuer.certs()
        verifier = TokenVerifier(certs=FileCertSource(issuer.certs_path), audience=AUDIENCE,
                                 issuers=frozenset({ISSUER}))
        rules = Rules(load_registry(REGISTRY), DOMAINS, verifier, MAX_BYTES)
        store = DkimKeyStore(keys_dir, SELECTOR)
        domains = [DOMAINS.main, DOMAINS.testing]
        token = issuer.mint(service_account=PROD_ACCOUNT, audience=AUDIENCE, ttl_seconds=86_400)
        return cls(rules, token, {d: DkimSigner(store.key_for(d)) for d in domains},
                   dns_records(domains=domains, keys=store.keys(domains)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World.build(tmp_path_factory.mktemp("keys"))


# --- strategies ---------------------------------------------------------------------------------

CONTROLS = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]]
CONTROLS += ["\u2028", "\u2029", "\ud800", "\udfff", "\ufeff", "\u202e", "\u200b"]
CHARSETS = ["utf-8", "UTF-8", "iso-8859-1", "us-ascii", "utf-16", "x-unknown", "utf-8*en", ""]

tricky_pieces = st.sampled_from([*CONTROLS, "=", "?", "=?", "?=", " ", "\t", ":", ";", '"',
                                 "\\", "<", ">", "@", ",", "(", ")", "_", "é", "中"])
tricky_text = st.lists(st.one_of(tricky_pieces, st.characters()), max_size=30).map("".join)


# Text a header may carry as it is (no controls), to make accepted requests common.
plain_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30)

@st.composite
def encoded_words(draw: st.DrawFn, *, benign: bool = False) -> str:
    """An RFC 2047 encoded word, well formed or not, whose text may hold anything (or, when
    `benign`, only what a header may carry)."""
    if benign:
        raw = draw(plain_text).encode()
    else:
        raw = draw(st.one_of(tricky_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                             st.binary(max_size=30)))
    if not benign and draw(st.booleans()):
        raw += draw(st.sampled_from([b"\r\n", b"\n", b"\r\nBcc: victim@example.org", b"\x0b"]))
    encoding = draw(st.sampled_from("bBqQ"))
    if encoding in "bB":
        payload = base64.b64encode(raw).decode()
    else:
        payload = quopri.encodestring(raw, header=True).decode().replace("=\n", "")
    payload = draw(st.sampled_from([payload, payload[:-1], payload + "=", payload + " "]))
    return f"=?{draw(st.sampled_from(CHARSETS))}?{encoding}?{payload}?="


header_text = st.lists(st.one_of(plain_text, encoded_words(), tricky_text),
                       min_size=1, max_size=4).map(" ".join)
gentle_text = st.lists(st.one_of(plain_text, encoded_words(benign=True)),
                       min_size=1, max_size=4).map(" ".join)
header_names = st.one_of(st.sampled_from(["X-Campaign", "List-Unsubscribe", "Keywords",
                                          "Comments", "Orig-Date", "X-A"]),
                         st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                 min_size=1, max_size=12))
local_parts = st.one_of(st.sampled_from(["alice", "Tester", "o'brien", "a.b+c", "用户"]),
                        tricky_text, encoded_words())
domains = st.sampled_from(["example.org", "EXAMPLE.org", "bücher.example", "xn--bcher-kva.de",
                           "[127.0.0.1]", "localhost", "a..b"])
addresses = st.one_of(st.emails(), st.builds("{}@{}".format, local_parts, domains))
def attachments(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({
        "filename": st.one_of(text, st.just("report.pdf")),
        "content_type": st.sampled_from(["text/plain", "application/pdf"]),
        "content_base64": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    })


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=8,
)
# Raw JSON no encoder writes: integers past Python's digit limit, deep nesting, lone surrogates.
raw_fragments = st.sampled_from(["1" + "0" * 5000, "[" * 30_000 + "]" * 30_000, '"\\ud800"',
                                 '"\\udc00x"', "1e999", "-0", "true", '"\\u0000"'])


@st.composite
def requests(draw: st.DrawFn, *, mangled: bool = False) -> bytes:
    """A well-formed send request with hostile text in its header-bound fields; `mangled`, one
    with a field of the wrong type or raw JSON no encoder would write as well."""
    text = draw(st.sampled_from([header_text, gentle_text]))
    data = request_dict(subject=draw(text))
    if draw(st.booleans()):
        data["headers"] = draw(st.dictionaries(header_names, text, max_size=3))
    if draw(st.booleans()):
        data["attachments"] = draw(st.lists(attachments(text), max_size=2))
    for field in ("to", "cc", "bcc", "reply_to"):
        if draw(st.integers(0, 3)) == 0:
            data[field] = draw(st.lists(addresses, min_size=1, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        data["from_tag"] = draw(st.one_of(tricky_text, st.sampled_from(["weekly", "a.b"])))
    if mangled and draw(st.booleans()):
        field = draw(st.sampled_from([*data, "extra"]))
        data[field] = draw(json_values)
    text = json.dumps(data, ensure_ascii=draw(st.booleans()))
    if mangled and draw(st.booleans()):
        field = draw(st.sampled_from([*data]))
        fragment = f'"{field}": {draw(raw_fragments)}, "was_{field}": '
        text = re.sub(rf'"{re.escape(field)}": ', lambda _: fragment, text, count=1)
    return text.encode("utf-8", "surrogatepass")


# --- checks -------------------------------------------------------------------------------------


def unfolded(block: bytes) -> list[str]:
    text = block.decode("ascii")
    return re.sub(r"\r\n(?=[ \t])", "", text).split("\r\n")


def check_rendered(envelope: Envelope, raw: bytes) -> None:
    """Exactly our headers (and the caller's allowed ones) at the top, three in each part, every
    line CRLF-terminated 7-bit text, and no decoded header value holding a line break."""
    assert re.fullmatch(rb"(?:[\x09\x20-\x7e]*\r\n)*[\x09\x20-\x7e]*", raw), "7bit CRLF lines"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    head, _, _ = raw.partition(b"\r\n\r\n")
    names = Counter(line.partition(":")[0].lower() for line in unfolded(head))
    custom = {name.lower() for name, _ in envelope.headers}
    assert set(names) == {n for n in names if n in OWN or n in custom}, names
    assert all(count == 1 for count in names.values()), names
    assert names["from"] == names["subject"] == names["date"] == names["message-id"] == 1
    assert names["cc"] == bool(envelope.cc) and names["reply-to"] == bool(envelope.reply_to)
    assert names.keys() >= custom
    msg = email.message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    for name, value in msg.items():
        assert "\r" not in str(value) and "\n" not in str(value), name
    for part in msg.walk():
        if part is not msg:
            part_names = Counter(k.lower() for k in part)
            assert set(part_names) <= PART_OWN and max(part_names.values()) == 1, part_names


def check_decision(world: World, body: bytes) -> Accepted | Rejected:
    """Decide `body` (its placeholder token replaced by a valid one); render, sign and verify
    it when accepted."""
    body = body.replace(PLACEHOLDER, world.token.encode())
    item = InboxItem("r.json", body, received_at=datetime.now(UTC))
    decision = decide(item, world.rules, datetime.now(UTC))
    assert isinstance(decision, Accepted | Rejected)
    if isinstance(decision, Accepted):
        env = decision.envelope
        raw = render(env, date=DATE, message_id_header=make_message_id_header(
            env.service, env.message_id, env.domain))
        check_rendered(env, raw)
        assert verify(world.signers[env.domain].sign(raw), world.records)
    return decision


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_any_request_is_decided_and_any_accepted_one_renders_safely_and_verifies(
    world: World, data: st.DataObject
) -> None:
    check_decision(world, data.draw(requests()))


@SETTINGS
@given(data=st.data())
def test_any_mangled_request_is_decided_without_raising(
    world: World, data: st.DataObject
) -> None:
    check_decision(world, data.draw(requests(mangled=True)))


@SETTINGS
@given(body=st.one_of(st.binary(max_size=200), json_values.map(
    lambda v: json.dumps(v).encode())))
def test_any_bytes_are_decided_without_raising(world: World, body: bytes) -> None:
    assert isinstance(check_decision(world, body), Rejected)


@SETTINGS
@given(subject=header_text, header=header_text, filename=header_text)
def test_header_bound_text_is_rejected_as_injection_or_rendered_literally(
    world: World, subject: str, header: str, filename: str
) -> None:
    attachment = {"filename": filename, "content_type": "text/plain", "content_base64": ""}
    body = json.dumps(request_dict(subject=subject,
                                   headers={"X-Campaign": header}, attachments=[attachment]))
    decision = check_decision(world, body.encode("utf-8", "surrogatepass"))
    if isinstance(decision, Rejected):
        assert decision.error.reason.value in {"header_injection", "malformed"}
    else:
        assert decision.envelope.subject == subject
