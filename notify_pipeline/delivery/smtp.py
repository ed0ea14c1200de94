"""SMTP transport: hands signed messages to an SMTP server over one reused connection.

Exactly-once hinges on one boundary. Until the final "." of DATA has been handed to the socket, the
server cannot have accepted the message, so any failure is safe to retry. Once it has, a lost reply
means the server may have accepted it: `AmbiguousHandoffError`, never retried. `smtplib.SMTP.data()`
hides that boundary inside one call, so the DATA phase is driven command by command here.

Not thread-safe: use one transport per thread.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from notify_pipeline.defaults import SMTP_TIMEOUT_SECONDS
from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientOutcome,
    RecipientStatus,
    Transport,
)
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

logger = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 30.0
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
class _Reply:
    code: int
    text: str

    @classmethod
    def of(cls, reply: tuple[int, bytes | str]) -> _Reply:
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


class _Failure(Exception):
    """This attempt failed before the final dot was sent; `retry` says whether another may help."""

    def __init__(self, detail: str, *, retry: bool = True) -> None:
        super().__init__(detail)
        self.retry = retry


class _Dropped(_Failure):
    """The connection became unusable and was discarded; `reply` is the server's 421, if any."""

    def __init__(self, detail: str, reply: _Reply | None = None) -> None:
        super().__init__(detail)
        self.reply = reply


class _Ambiguous(Exception):
    """The body and its final dot were sent but no reply came: the server may have accepted it."""


@dataclass
class _Transaction:
    """The replies of one MAIL FROM ... DATA exchange, sorted by what they mean per recipient."""

    accepted: list[str] = field(default_factory=list)
    deferred: dict[str, _Reply] = field(default_factory=dict)
    bounced: dict[str, _Reply] = field(default_factory=dict)
    final: _Reply | None = None  # the 2xx that ended DATA, which made `accepted` final

    def add(self, recipient: str, reply: _Reply) -> None:
        if reply.ok:
            self.accepted.append(recipient)
        elif reply.permanent:
            self.bounced[recipient] = reply
        else:
            self.deferred[recipient] = reply

    def bounce_accepted(self, reply: _Reply) -> None:
        """The server refused the message itself, so every recipient it had taken bounces."""
        self.bounced.update(dict.fromkeys(self.accepted, reply))
        self.accepted.clear()


@dataclass
class _Progress:
    """What one `send` has learned so far, across its transactions."""

    pending: list[str]
    outcomes: dict[str, RecipientOutcome] = field(default_factory=dict)
    deferrals: dict[str, _Reply] = field(default_factory=dict)
    queue_id: str | None = None
    handed_off: bool = False
    error: _Failure | None = None
    attempts: int = 0

    def record(self, tx: _Transaction) -> None:
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


class SmtpTransport(Transport):
    """Delivers through one SMTP server (the local sink, a mailtrap inbox, a relay).

    `ssl_context` is used for STARTTLS (default: the system's trust store, hostname checked). The
    password is kept out of `repr`, logs and error messages.
    """

    reports_delivery = True

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout: float = SMTP_TIMEOUT_SECONDS,
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        local_hostname: str | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ConfigError("NOTIFY_SMTP_USERNAME", "username and password go together")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.host, self.port, self.timeout = host, port, timeout
        self.starttls, self.username = starttls, username
        self.max_attempts, self.backoff_seconds = max_attempts, backoff_seconds
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context
        self._password = password
        self._conn: smtplib.SMTP | None = None
        self._dirty = False  # a transaction was opened and not finished: RSET before the next

    def __repr__(self) -> str:
        return (
            f"SmtpTransport(host={self.host!r}, port={self.port}, starttls={self.starttls}, "
            f"username={self.username!r})"
        )

    def send(self, message: OutgoingMessage) -> HandoffResult:
        """Deliver `message`; recipients deferred (4xx) are retried in new transactions.

        Raises only while nothing has been handed off. Once one transaction has delivered, a raise
        would invite a retry that duplicates it, so later trouble becomes FAILED outcomes.
        `provider_message_id` is the first transaction's queue id.
        """
        recipients = list(dict.fromkeys(message.recipients))
        progress = _Progress(pending=recipients)
        while self._attempt(message, progress):
            time.sleep(self._backoff(progress.attempts))
        if progress.pending and progress.error and not progress.handed_off:
            raise RetryableDeliveryError(
                f"{self._where()}: {progress.error} (gave up after {progress.attempts} attempts)"
            ) from progress.error
        progress.fail_pending()
        outcomes = tuple(progress.outcomes[recipient] for recipient in recipients)
        return HandoffResult(provider_message_id=progress.queue_id, outcomes=outcomes)

    def close(self) -> None:
        """Say QUIT politely; a server that already went away is no reason to fail."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except OSError:
            conn.close()

    def _attempt(self, message: OutgoingMessage, progress: _Progress) -> bool:
        """Run one transaction for the pending recipients; return whether to try another."""
        progress.attempts += 1
        try:
            progress.record(self._transaction(message, progress.pending))
        except _Failure as e:
            progress.error = e
            self._log_failure(message, progress, e)
            return e.retry and progress.attempts < self.max_attempts
        except _Ambiguous as e:
            if not progress.handed_off:
                raise AmbiguousHandoffError(f"{self._where()}: {e}") from e
            progress.fail_pending(f"may have been delivered: {e}")
        except BaseException:
            self._discard()  # the conversation is in an unknown state: never reuse it
            raise
        return bool(progress.pending) and progress.attempts < self.max_attempts

    def _transaction(self, message: OutgoingMessage, recipients: list[str]) -> _Transaction:
        tx = _Transaction()
        mail = self._begin(message)
        if mail.permanent:
            tx.bounced = dict.fromkeys(recipients, mail)
            return tx
        self._expect_ok(mail, "MAIL FROM")
        self._dirty = True
        conn = self._connection()
        for recipient in recipients:
            tx.add(recipient, self._reply(partial(conn.rcpt, recipient)))
        if tx.accepted:
            self._data(conn, message.data, tx)
        return tx

    def _begin(self, message: OutgoingMessage) -> _Reply:
        """MAIL FROM; a reused connection the server has dropped (idle timeout, 421) is replaced.

        Replacing it costs no attempt: nothing can have been handed off before MAIL FROM.
        """
        reused = self._conn is not None
        try:
            return self._mail_from(message)
        except _Dropped:
            if not reused:
                raise
        return self._mail_from(message)

    def _mail_from(self, message: OutgoingMessage) -> _Reply:
        conn = self._connection()
        if self._dirty:
            reset = self._reply(conn.rset)
            if not reset.ok:
                self._discard()
                raise _Dropped(f"RSET refused: {reset}")
            self._dirty = False
        options = self._mail_options(conn, message)
        return self._reply(partial(conn.mail, message.envelope_from, options))

    def _mail_options(self, conn: smtplib.SMTP, message: OutgoingMessage) -> list[str]:
        options = [f"SIZE={len(message.data)}"] if conn.has_extn("size") else []
        if not message.data.isascii() and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(address.isascii() for address in (message.envelope_from, *message.recipients)):
            if not conn.has_extn("smtputf8"):
                raise PermanentDeliveryError(
                    f"{self._where()}: server lacks SMTPUTF8, needed for non-ASCII addresses"
                )
            options.append("SMTPUTF8")
        return options

    def _data(self, conn: smtplib.SMTP, data: bytes, tx: _Transaction) -> None:
        """DATA, the body, the final reply: the only phase where a failure can be ambiguous."""
        go_ahead = self._reply(partial(conn.docmd, "DATA"))
        if go_ahead.permanent:
            tx.bounce_accepted(go_ahead)
            return
        if go_ahead.code != 354:
            raise _Failure(f"DATA refused: {go_ahead}")
        self._send_body(conn, data)
        final = self._final_reply(conn)
        self._dirty = False
        if final.permanent:
            tx.bounce_accepted(final)
        elif not final.ok:
            raise _Failure(f"message refused: {final}")
        else:
            tx.final = final

    def _send_body(self, conn: smtplib.SMTP, data: bytes) -> None:
        """sendall() returns only once every byte, the final dot last, is with the kernel."""
        try:
            conn.send(wire_body(data))
        except smtplib.SMTPServerDisconnected as e:
            self._discard()
            raise _Dropped(f"connection lost before the message was fully sent: {e}") from e

    def _final_reply(self, conn: smtplib.SMTP) -> _Reply:
        try:
            return self._reply(conn.getreply)
        except _Dropped as e:
            if e.reply is not None:
                raise  # a 421 is an explicit refusal, safe to retry
            raise _Ambiguous(f"no reply after the message was sent ({e})") from e

    def _reply(self, command: Callable[[], tuple[int, bytes]]) -> _Reply:
        """Run one command; a lost connection or a 421 discards the connection (`_Dropped`)."""
        try:
            reply = _Reply.of(command())
        except smtplib.SMTPServerDisconnected as e:
            self._discard()
            raise _Dropped(f"connection lost: {e}") from e
        if reply.code == 421:
            self._discard()
            raise _Dropped(f"server closing connection: {reply}", reply)
        return reply

    def _expect_ok(self, reply: _Reply, command: str) -> None:
        if not reply.ok:
            raise _Failure(f"{command} refused: {reply}")

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
            self._dirty = False
        return self._conn

    def _connect(self) -> smtplib.SMTP:
        """Open a session: greeting, EHLO, STARTTLS and AUTH when configured."""
        try:
            conn = smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
            )
        except OSError as e:
            raise self._setup_failure(e) from e
        try:
            self._handshake(conn)
        except OSError as e:
            conn.close()
            raise self._setup_failure(e) from e
        return conn

    def _handshake(self, conn: smtplib.SMTP) -> None:
        conn.ehlo_or_helo_if_needed()
        if self.starttls:
            context = self._ssl_context or ssl.create_default_context()
            code, text = conn.starttls(context=context)
            if code != 220:
                raise smtplib.SMTPResponseException(code, text)
            conn.ehlo_or_helo_if_needed()
        if self.username is not None and self._password is not None:
            conn.login(self.username, self._password)

    def _setup_failure(self, e: OSError) -> _Failure:
        """Refusals (5xx), missing extensions and TLS errors are configuration: retrying won't help.

        Not hammering an AUTH endpoint with a wrong password also avoids account lock-outs.
        """
        if isinstance(e, smtplib.SMTPResponseException):
            reply = _Reply.of((e.smtp_code, e.smtp_error))
            return _Failure(f"session refused: {reply}", retry=not reply.permanent)
        disconnected = isinstance(e, smtplib.SMTPServerDisconnected)
        fatal = isinstance(e, ssl.SSLError | smtplib.SMTPException) and not disconnected
        return _Failure(f"cannot open session: {type(e).__name__}: {e}", retry=not fatal)

    def _discard(self) -> None:
        """Forget the connection without QUIT: its state is unknown or the server has gone."""
        conn, self._conn = self._conn, None
        self._dirty = False
        if conn is not None:
            conn.close()

    def _backoff(self, attempts: int) -> float:
        return float(min(self.backoff_seconds * 2 ** (attempts - 1), _MAX_BACKOFF_SECONDS))

    def _where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def _log_failure(self, message: OutgoingMessage, progress: _Progress, e: _Failure) -> None:
        logger.warning(
            "%s: attempt %d/%d for %s/%s failed: %s",
            self._where(),
            progress.attempts,
            self.max_attempts,
            message.service,
            message.message_id,
            e,
            extra={"service": message.service, "message_id": message.message_id},
        )
