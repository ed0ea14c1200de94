"""What an SMTP conversation carries and what its replies mean, apart from the transport that
holds the connection: the DATA body on the wire, the queue id in a final reply, and the
bookkeeping of which recipients each transaction accepted, deferred or bounced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from notify_pipeline.delivery.base import RecipientOutcome, RecipientStatus

# Where common servers put their queue id in the final DATA reply: Postfix and our sink say
# "250 2.0.0 Ok: queued as ABC123", Exim says "250 OK id=1abcDE-000123-AB".
_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as\s+([^\s;,]+)", re.IGNORECASE),
    re.compile(r"\bid=([^\s;,]+)", re.IGNORECASE),
)
_ANY_EOL = re.compile(rb"\r\n|\r|\n")


def queue_id(reply_text: str) -> str | None:
    """The server's queue id in a final DATA reply, or None when it names none (aiosmtpd's "OK")."""
    for pattern in _QUEUE_ID_PATTERNS:
        if match := pattern.search(reply_text):
            return match.group(1)
    return None


def wire_body(data: bytes) -> bytes:
    """What follows DATA's 354: CRLF line ends, leading dots doubled, then "." (RFC 5321 4.5.2).

    Normalising line ends does not break a DKIM signature: both canonicalisations hash CRLF lines.
    Byte counts and `replace` rather than regular expressions: ten times faster on large messages.
    """
    crlf = data.count(b"\r\n")
    if crlf != data.count(b"\n") or crlf != data.count(b"\r"):
        data = _ANY_EOL.sub(b"\r\n", data)
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


@dataclass(frozen=True)
class Reply:
    """One server reply: its code, and its text on one line."""

    code: int
    text: str

    @classmethod
    def of(cls, reply: tuple[int, bytes | str]) -> Reply:
        code, text = reply
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return cls(code, text.replace("\n", " "))

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class Failure(Exception):
    """This attempt failed before the final dot was sent; `retry` says whether another may help."""

    def __init__(self, detail: str, *, retry: bool = True) -> None:
        super().__init__(detail)
        self.retry = retry


class Dropped(Failure):
    """The connection became unusable and was discarded; `reply` is the server's 421, if any."""

    def __init__(self, detail: str, reply: Reply | None = None) -> None:
        super().__init__(detail)
        self.reply = reply


class Ambiguous(Exception):
    """The body and its final dot were sent but no reply came: the server may have accepted it."""


@dataclass
class Transaction:
    """The replies of one MAIL FROM ... DATA exchange, sorted by what they mean per recipient."""

    accepted: list[str] = field(default_factory=list)
    deferred: dict[str, Reply] = field(default_factory=dict)
    bounced: dict[str, Reply] = field(default_factory=dict)
    final: Reply | None = None  # the 2xx that ended DATA, which made `accepted` final

    def add(self, recipient: str, reply: Reply) -> None:
        if reply.ok:
            self.accepted.append(recipient)
        elif reply.permanent:
            self.bounced[recipient] = reply
        else:
            self.deferred[recipient] = reply

    def bounce_accepted(self, reply: Reply) -> None:
        """The server refused the message itself, so every recipient it had taken bounces."""
        self.bounced.update(dict.fromkeys(self.accepted, reply))
        self.accepted.clear()


@dataclass
class Progress:
    """What one `send` has learned so far, across its transactions."""

    pending: list[str]
    outcomes: dict[str, RecipientOutcome] = field(default_factory=dict)
    deferrals: dict[str, Reply] = field(default_factory=dict)
    queue_id: str | None = None
    handed_off: bool = False
    error: Failure | None = None
    attempts: int = 0

    def record(self, tx: Transaction) -> None:
        if tx.final is not None:
            for recipient in tx.accepted:
                self._settle(recipient, RecipientStatus.ACCEPTED, tx.final.code, tx.final.text)
        for recipient, reply in tx.bounced.items():
            self._settle(recipient, RecipientStatus.BOUNCED, reply.code, reply.text)
        self.deferrals.update(tx.deferred)
        self.pending = list(tx.deferred)
        self.handed_off = self.handed_off or bool(tx.accepted)
        if tx.final is not None and self.queue_id is None:
            self.queue_id = queue_id(tx.final.text)
        self.error = None

    def fail_pending(self, diagnostic: str | None = None) -> None:
        """Give up on the recipients still pending, with their last refusal or `diagnostic`."""
        for recipient in self.pending:
            reply = self.deferrals.get(recipient)
            code = reply.code if reply and diagnostic is None else None
            text = diagnostic or (reply.text if reply else str(self.error or ""))
            self._settle(recipient, RecipientStatus.FAILED, code, text)
        self.pending = []

    def _settle(
        self, recipient: str, status: RecipientStatus, code: int | None = None, text: str = ""
    ) -> None:
        self.outcomes[recipient] = RecipientOutcome(recipient, status, code, text)
