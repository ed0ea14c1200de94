"""Checks on a send request that need no registry: header safety and address syntax.

The pipeline's policy runs them on every request; the client runs the same code before
anything is written, so a caller hears at once what the pipeline would reject. Light imports
only: the client is installed without the server's dependencies.
"""

from __future__ import annotations

import re
from email.errors import MessageError
from email.headerregistry import Address
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from notify_pipeline import header_text
from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.request import SendRequest

# Headers that identify the sender, carry routing or authentication results, or describe the MIME
# structure: a caller setting them could spoof, break signing or corrupt the message.
DISALLOWED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "Sender", "Return-Path", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date",
        "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
        "Content-Disposition", "DKIM-Signature", "Domainkey-Signature", "ARC-Seal",
        "ARC-Message-Signature", "ARC-Authentication-Results", "Authentication-Results",
        "Received", "Received-SPF", "Delivered-To", "Resent-From", "Resent-Sender", "Resent-To",
        "Resent-Cc", "Resent-Bcc", "Resent-Date", "Resent-Message-ID", "Errors-To",
    )
)
DISALLOWED_PREFIXES = ("x-ses-", "x-notify-")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext: printable ASCII except ':'
_BREAKS = ("\r", "\n", "\x00")
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
# The common shape of an address: a dot-atom of letters, digits and `_+-` at a dotted name of
# letters, digits and hyphens. Such a local part is valid wherever it goes and reads back as
# written, so an address of this shape passes `_checked` exactly when its domain does (no
# punycode label: its Unicode form could be longer) and it is no longer than the limit.
_PLAIN = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MAX_PLAIN_LENGTH = 254  # RFC 5321's limit on a whole address, which email-validator applies


class FieldRejected(RequestRejected):
    """A rejection that names the request field at fault (`to[0]`, `headers.'X-A'`...)."""

    def __init__(self, reason: RejectReason, field: str, message: str) -> None:
        super().__init__(reason, message)
        self.field = field


def check_injection(request: SendRequest) -> None:
    """CR, LF or NUL anywhere that ends up in a header would let a caller add headers; other
    controls, and encoded words that decode to any, are refused with them (`header_text`)."""
    fields: list[tuple[str, str]] = [("subject", request.subject)]
    fields += [("from_tag", request.from_tag or "")]
    for name in ADDRESS_FIELDS:
        fields += [(f"{name}[{i}]", v) for i, v in enumerate(getattr(request, name))]
    for key, value in request.headers.items():
        fields += [(f"headers.{key!r}", key), (f"headers.{key!r}", value)]
    for i, att in enumerate(request.attachments):
        fields += [(f"attachments[{i}].filename", att.filename)]
    for where, value in fields:
        if any(ch in value for ch in _BREAKS):
            raise FieldRejected(
                RejectReason.HEADER_INJECTION, where, f"{where} contains a line break or NUL"
            )
        unsafe = header_text.problem(value)
        if unsafe:
            raise FieldRejected(RejectReason.HEADER_INJECTION, where, f"{where} {unsafe}")


def check_headers(headers: dict[str, str]) -> None:
    seen: set[str] = set()
    for name in headers:
        lowered = name.lower()
        where = f"headers.{name!r}"
        if not HEADER_NAME.match(name):
            raise FieldRejected(
                RejectReason.DISALLOWED_HEADER, where, f"{name!r} is not a valid header name"
            )
        if lowered in DISALLOWED_HEADERS or lowered.startswith(DISALLOWED_PREFIXES):
            raise FieldRejected(
                RejectReason.DISALLOWED_HEADER, where, f"callers may not set the {name} header"
            )
        if lowered in seen:
            raise FieldRejected(
                RejectReason.DISALLOWED_HEADER, where,
                f"the {name} header is given more than once",
            )
        seen.add(lowered)


def check_addresses(request: SendRequest) -> dict[str, tuple[str, ...]]:
    """Each address field (`ADDRESS_FIELDS`) as it will be sent, every address one a header can
    carry as written.

    Internationalised domains become their ASCII (IDNA) form; local parts stay as written, and
    one that is not ASCII is refused, since that would need SMTPUTF8. The renderer must read
    each address back unchanged: it decodes what looks like an RFC 2047 encoded word even in a
    local part, and would then write something else than what the caller sent.
    """
    return {name: tuple(_sendable(f"{name}[{i}]", address)
                        for i, address in enumerate(getattr(request, name)))
            for name in ADDRESS_FIELDS}


def _sendable(where: str, address: str) -> str:
    """`address` as it will be sent, else `FieldRejected` naming `where`.

    The full checks cost ~0.1 ms an address, most of it the domain's; recipients share a few
    domains, so an address of the common shape is settled by its domain's cached verdict."""
    return address if _plain(address) else _checked(where, address)


def _plain(address: str) -> bool:
    if len(address) > _MAX_PLAIN_LENGTH or not _PLAIN.fullmatch(address):
        return False
    return _domain_passes(address.partition("@")[2])


@lru_cache(maxsize=4096)
def _domain_passes(domain: str) -> bool:
    """Whether an address at `domain` with the shortest plain local part passes `_checked`;
    never for a punycode domain, whose Unicode form the length checks may count instead."""
    if "xn--" in domain.lower():
        return False
    try:
        _checked("domain", f"a@{domain}")
    except FieldRejected:
        return False
    return True


def _checked(where: str, address: str) -> str:
    """The full checks: email-validator's syntax rules, then a read back through the stdlib's
    header parser."""
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise FieldRejected(
            RejectReason.MALFORMED, where, f"{where} is not a valid email address: {exc}"
        ) from None
    local, _, domain = address.rpartition("@")
    sendable = address if domain.isascii() else f"{local}@{valid.ascii_domain}"
    try:
        readable = Address(addr_spec=sendable).addr_spec == sendable
    except (ValueError, MessageError, IndexError):
        readable = False
    if not readable:
        raise FieldRejected(
            RejectReason.MALFORMED, where, f"{where} cannot be written in a message header as given"
        )
    return sendable
