"""Checks on a send request that need no registry: header safety and address syntax.

The pipeline's policy runs them on every request; the client runs the same code before
anything is written, so a caller hears at once what the pipeline would reject. Light imports
only: the client is installed without the server's dependencies.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

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


class FieldRejected(RequestRejected):
    """A rejection that names the request field at fault (`to[0]`, `headers.'X-A'`...)."""

    def __init__(self, reason: RejectReason, field: str, message: str) -> None:
        super().__init__(reason, message)
        self.field = field


def check_injection(request: SendRequest) -> None:
    """CR, LF or NUL anywhere that ends up in a header would let a caller add headers."""
    fields: list[tuple[str, str]] = [("subject", request.subject)]
    fields += [("from_tag", request.from_tag or "")]
    for name in ("to", "cc", "bcc", "reply_to"):
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


def check_addresses(request: SendRequest) -> None:
    for name in ("to", "cc", "bcc", "reply_to"):
        for i, address in enumerate(getattr(request, name)):
            try:
                validate_email(address, check_deliverability=False, allow_smtputf8=True)
            except EmailNotValidError as exc:
                raise FieldRejected(
                    RejectReason.MALFORMED, f"{name}[{i}]",
                    f"{name}[{i}] is not a valid email address: {exc}",
                ) from None
