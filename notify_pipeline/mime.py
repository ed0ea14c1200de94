"""Render a policy-approved `Envelope` as RFC 5322 / MIME bytes, deterministically.

Determinism matters because a batch may be re-run after a crash: the same (service, id) must give
the same Message-ID and the same bytes, so the ledger, the provider and the recipient all see one
message. The `email` package is deterministic except for multipart boundaries, which it picks at
random; we derive them from the Message-ID instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from email.contentmanager import _encode_text  # type: ignore[attr-defined]
from email.header import Header
from email.headerregistry import (
    Address,
    BaseHeader,
    ContentDispositionHeader,
    Group,
    HeaderRegistry,
    UniqueAddressHeader,
    UniqueUnstructuredHeader,
    UnstructuredHeader,
)
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime, formataddr
from typing import Any
from urllib.parse import quote

from notify_pipeline.message import Attachment, Envelope


# Each class also names BaseHeader, which HeaderRegistry mixes in at runtime anyway; typeshed's
# stubs for the mixins and BaseHeader disagree on `max_count`/`init`, hence the ignores.
class _LiteralText:
    """A header whose text is the caller's, kept literal: parsed without decoding, and folded
    by us as encoded words where it could start one (see `_fold_encoded`)."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        """As the stdlib parses it, but the header's text is `value` itself, undecoded."""
        super().parse(value, kwds)  # type: ignore[misc]
        kwds["decoded"] = value

    def fold(self, *, policy: Policy) -> str:
        text, name = str(self), self.name  # type: ignore[attr-defined]
        if _ENCODED_WORD_START in text:
            return _fold_encoded(name, text, policy)
        return self._fold_plain(policy)

    def _fold_plain(self, policy: Policy) -> str:
        raise NotImplementedError


class _SubjectHeader(_LiteralText, UniqueUnstructuredHeader, BaseHeader):  # type: ignore[misc]
    """Subject folded by the legacy `email.header.Header` encoder, its text kept literal.

    CPython 3.11's modern folder drops the space between two RFC 2047 encoded words in about one
    long non-ASCII subject in ten ("Héllo wörld" arrives as "Héllowörld"); the legacy encoder
    keeps each space inside an encoded word and round-trips exactly.
    """

    def _fold_plain(self, policy: Policy) -> str:
        return _fold(self.name, Header(str(self), header_name=self.name), policy)


class _CallerHeader(_LiteralText, UnstructuredHeader, BaseHeader):
    """A caller's extra header: unstructured whatever its name, its text kept literal."""

    def _fold_plain(self, policy: Policy) -> str:
        folded: str = BaseHeader.fold(self, policy=policy)
        return folded


# Caller text is literal: where it holds what could start an RFC 2047 encoded word, the header
# parser must not decode it (CPython before 3.11.10 / 3.12.5 would then fold any CR/LF it
# decoded into real header lines) and readers must not either, so we encode all of it ourselves.
_ENCODED_WORD_START = "=?"


def _fold_encoded(name: str, text: str, policy: Policy) -> str:
    """`text` as UTF-8 encoded words only, which every reader decodes back to `text`."""
    return _fold(name, Header(text, "utf-8", header_name=name), policy)


class _FromHeader(UniqueAddressHeader, BaseHeader):  # type: ignore[misc]
    """From folded by the legacy encoder, for the same reason as `_SubjectHeader`.

    An ASCII display name with specials (commas, quotes) becomes a quoted string; any other is
    one or more base64/Q encoded words, which RFC 2047 allows in a phrase.
    """

    def fold(self, *, policy: Policy) -> str:
        (address,) = self.addresses
        name, addr_spec = address.display_name, address.addr_spec
        if name.isascii() and _ENCODED_WORD_START not in name:
            header = Header(formataddr((name, addr_spec)), header_name=self.name)
        else:
            header = Header(name, "utf-8", header_name=self.name)
            header.append(f"<{addr_spec}>", "us-ascii")
        return _fold(self.name, header, policy)


def _fold(name: str, header: Header, policy: Policy) -> str:
    return f"{name}: {header.encode(linesep=policy.linesep)}{policy.linesep}"


class _CachingHeaderRegistry(HeaderRegistry):
    """A header registry that builds each header class once instead of once per header.

    The stdlib's `__getitem__` calls `type()` for every header it parses (17 times per
    message here, about a third of `render`'s time, and each new class also resets CPython's
    method caches). The classes it builds for one name are interchangeable, so we keep them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


def _header_registry() -> HeaderRegistry:
    registry = _CachingHeaderRegistry()
    registry.map_to_type("subject", _SubjectHeader)
    registry.map_to_type("from", _FromHeader)
    return registry


# CRLF line endings, and no 8bit bodies: RFC 6376 section 5.3 asks signers to use a 7-bit
# transfer encoding, because a relay that downgrades 8bit to quoted-printable breaks the DKIM
# body hash. Non-ASCII text therefore goes out as quoted-printable or base64.
POLICY = SMTP.clone(cte_type="7bit", header_factory=_header_registry())

# Shown when a message has only Bcc recipients, as most mail clients do; some receivers score a
# message without To as spam.
_UNDISCLOSED = Group("undisclosed-recipients")


def make_message_id_header(service: str, message_id: str, domain: str) -> str:
    """The Message-ID for (service, message_id): the same pair always yields the same header.

    The request id is hashed rather than shown, so recipients learn nothing from it.
    """
    key = json.dumps([service, message_id]).encode()
    return f"<{hashlib.sha256(key).hexdigest()[:32]}@{domain}>"


def render(envelope: Envelope, *, date: datetime, message_id_header: str) -> bytes:
    """The message as CRLF-terminated bytes, ready for DKIM signing. Bcc never appears."""
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    simple = render_simple(envelope, date=date, message_id_header=message_id_header)
    if simple is not None:
        return simple
    return render_stdlib(envelope, date=date, message_id_header=message_id_header)


# The shapes `render_simple` writes itself: plain dot-atom addresses, ASCII text with single
# spaces inside, a Message-ID as `make_message_id_header` makes it.
_SIMPLE_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_SIMPLE_ADDRESS = re.compile(rf"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@{_SIMPLE_DOMAIN}")
_SIMPLE_TEXT = re.compile(r"(?:[!-~]+(?: [!-~]+)*)?")
_SIMPLE_MESSAGE_ID = re.compile(rf"<[0-9a-f]+@{_SIMPLE_DOMAIN}>")
# Shorter than the 78 characters at which either of the stdlib's folders starts folding.
_SIMPLE_LINE = 76
_LINE_END = re.compile(r"\r\n|\r|\n")  # what the generator writes as CRLF


def render_simple(envelope: Envelope, *, date: datetime, message_id_header: str) -> bytes | None:
    """The bytes `render_stdlib` gives, written directly, for the commonest shape; else None.

    A text-only message with plain addresses and short ASCII headers needs none of the
    stdlib's header quoting, encoding or folding, and building it through `EmailMessage` is
    most of a message's rendering cost. The body is encoded by the function `set_content` uses
    (`email.contentmanager._encode_text`: 7bit, quoted-printable or base64 by the same
    heuristics), so it is the stdlib's by construction. Anything outside that shape returns
    None and takes the stdlib path; `tests/test_mime_simple.py` proves the two byte-identical.
    """
    text = envelope.text
    if (text is None or envelope.html is not None or envelope.attachments or envelope.headers
            or not envelope.to):
        return None
    addresses = (envelope.from_address, *envelope.to, *envelope.cc, *envelope.reply_to)
    if not (all(_SIMPLE_ADDRESS.fullmatch(a) for a in addresses)
            and _SIMPLE_TEXT.fullmatch(envelope.from_display)
            and _SIMPLE_TEXT.fullmatch(envelope.subject)
            and _SIMPLE_MESSAGE_ID.fullmatch(message_id_header)
            and _ENCODED_WORD_START not in envelope.from_display + envelope.subject):
        return None
    lines = [f"From: {formataddr((envelope.from_display, envelope.from_address))}",
             f"To: {', '.join(envelope.to)}"]
    if envelope.cc:
        lines.append(f"Cc: {', '.join(envelope.cc)}")
    if envelope.reply_to:
        lines.append(f"Reply-To: {', '.join(envelope.reply_to)}")
    lines += [f"Subject: {envelope.subject}", f"Date: {format_datetime(date)}",
              f"Message-ID: {message_id_header}"]
    if any(len(line) > _SIMPLE_LINE for line in lines):
        return None
    cte, payload = _encode_text(text, "utf-8", None, POLICY)
    head = [*lines, "MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"',
            f"Content-Transfer-Encoding: {cte}", ""]
    return "\r\n".join([*head, _LINE_END.sub("\r\n", payload)]).encode("ascii")


def render_stdlib(envelope: Envelope, *, date: datetime, message_id_header: str) -> bytes:
    """The message built through the stdlib's `EmailMessage`: every shape, every encoding."""
    msg = EmailMessage(policy=POLICY)
    _add_headers(msg, envelope, date, message_id_header)
    _add_body(msg, envelope)
    _finish_parts(msg, message_id_header, (envelope.text or "") + (envelope.html or ""))
    return msg.as_bytes()


def _add_headers(msg: EmailMessage, envelope: Envelope, date: datetime, message_id: str) -> None:
    # Address objects, not strings: the header registry then quotes and RFC 2047-encodes
    # display names with commas, quotes or non-ASCII characters.
    msg["From"] = Address(display_name=envelope.from_display, addr_spec=envelope.from_address)
    if envelope.to:
        msg["To"] = _addresses(envelope.to)
    elif not envelope.cc:
        msg["To"] = [_UNDISCLOSED]
    if envelope.cc:
        msg["Cc"] = _addresses(envelope.cc)
    if envelope.reply_to:
        msg["Reply-To"] = _addresses(envelope.reply_to)
    msg["Subject"] = envelope.subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    for name, value in envelope.headers:
        msg[name] = _CallerHeader(name, value)


def _addresses(addrs: Iterable[str]) -> list[Address]:
    return [Address(addr_spec=addr) for addr in addrs]


def _add_body(msg: EmailMessage, envelope: Envelope) -> None:
    """text/plain, text/html, or multipart/alternative of both; multipart/mixed with attachments."""
    if envelope.text is not None:
        msg.set_content(envelope.text)
        if envelope.html is not None:
            msg.add_alternative(envelope.html, subtype="html")
    elif envelope.html is not None:
        msg.set_content(envelope.html, subtype="html")
    else:
        raise ValueError("an envelope needs text or html")
    for attachment in envelope.attachments:
        _attach(msg, attachment)


def _attach(msg: EmailMessage, attachment: Attachment) -> None:
    maintype, _, subtype = attachment.content_type.partition("/")
    msg.add_attachment(
        attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
    )
    if _ENCODED_WORD_START in attachment.filename:
        *_, part = msg.iter_attachments()
        part.replace_header("Content-Disposition", _LiteralDisposition(attachment.filename))


class _LiteralDisposition(ContentDispositionHeader, BaseHeader):  # type: ignore[misc]
    """`attachment` with a filename that must stay literal, always RFC 2231 percent-encoded.

    The stdlib writes an ASCII filename as a quoted string, and parsers (and mail readers)
    decode encoded words even inside quotes; nothing decodes them in an RFC 2231 value.
    """

    def __new__(cls, filename: str) -> _LiteralDisposition:
        value = f"attachment; filename*=utf-8''{quote(filename, safe='')}"
        header: _LiteralDisposition = super().__new__(cls, "Content-Disposition", value)
        return header

    def fold(self, *, policy: Policy) -> str:
        pieces = _rfc2231_pieces(quote(self.params["filename"], safe=""))
        charset = "utf-8''"
        if len(pieces) == 1:
            params = [f"filename*={charset}{pieces[0]}"]
        else:
            params = [f"filename*{i}*={charset if i == 0 else ''}{piece}"
                      for i, piece in enumerate(pieces)]
        sep = f";{policy.linesep} "
        return f"{self.name}: attachment{sep}{sep.join(params)}{policy.linesep}"


def _rfc2231_pieces(encoded: str, width: int = 50) -> list[str]:
    """`encoded` cut into pieces of at most `width` characters, never inside a %XX escape:
    with its parameter name each piece fits a 78-character line."""
    pieces, current = [], ""
    for token in re.findall(r"%[0-9A-F]{2}|.", encoded):
        if len(current) + len(token) > width:
            pieces.append(current)
            current = ""
        current += token
    return [*pieces, current]


def _finish_parts(msg: EmailMessage, seed: str, raw_text: str) -> None:
    """Give every multipart a boundary derived from `seed` instead of a random one, and drop the
    MIME-Version header that `add_alternative`/`add_attachment` copy into each body part."""
    multiparts = [part for part in msg.walk() if part.is_multipart()]
    for index, part in enumerate(multiparts):
        part.set_boundary(_boundary(seed, index, raw_text))
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]


def _boundary(seed: str, index: int, raw_text: str) -> str:
    """A boundary that cannot occur in any encoded body part.

    Base64 never contains `=_` and quoted-printable never does either (`=` always starts an
    escape or a soft line break), so only a 7bit text part could hold it verbatim: we check the
    raw text and html and move to the next candidate if a caller happened to include it.
    """
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{seed}\n{index}\n{attempt}".encode()).hexdigest()[:40]
        candidate = f"=_{digest}"
        if candidate not in raw_text:
            return candidate
        attempt += 1
