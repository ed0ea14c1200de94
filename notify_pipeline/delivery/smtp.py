"""SMTP transport: hands signed messages to an SMTP server over one reused connection.

Exactly-once hinges on one boundary. Until the final "." of DATA has been handed to the socket, the
server cannot have accepted the message, so any failure is safe to retry. Once it has, a lost reply
means the server may have accepted it: `AmbiguousHandoffError`, never retried. `smtplib.SMTP.data()`
hides that boundary inside one call, so the DATA phase is driven command by command here.

Not thread-safe: use one transport per thread.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from functools import partial

from notify_pipeline.defaults import SMTP_TIMEOUT_SECONDS
from notify_pipeline.delivery.backoff import jittered_backoff
from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport
from notify_pipeline.delivery.smtp_wire import (
    Ambiguous,
    Dropped,
    Failure,
    Progress,
    Reply,
    Transaction,
    wire_body,
)
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    ConfigError,
    PermanentDeliveryError,
    RecipientsDeferredError,
    RetryableDeliveryError,
)

logger = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 30.0


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
        When every recipient is still refused for now at RCPT (greylisting), nothing was sent
        and the refusals need not stand: `RecipientsDeferredError` lets the message wait.
        `provider_message_id` is the first transaction's queue id.
        """
        recipients = list(dict.fromkeys(message.recipients))
        progress = Progress(pending=recipients)
        while self._attempt(message, progress):
            time.sleep(self._backoff(progress.attempts))
        if progress.pending and progress.error and not progress.handed_off:
            raise RetryableDeliveryError(
                f"{self._where()}: {progress.error} (gave up after {progress.attempts} attempts)"
            ) from progress.error
        every_one_deferred = bool(progress.pending) and not progress.outcomes
        progress.fail_pending()
        outcomes = tuple(progress.outcomes[recipient] for recipient in recipients)
        result = HandoffResult(provider_message_id=progress.queue_id, outcomes=outcomes)
        if every_one_deferred and not progress.handed_off:
            raise RecipientsDeferredError(
                f"{self._where()}: every recipient refused for now after {progress.attempts}"
                " attempts", result)
        return result

    def close(self) -> None:
        """Say QUIT politely; a server that already went away is no reason to fail."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except OSError:
            conn.close()

    def _attempt(self, message: OutgoingMessage, progress: Progress) -> bool:
        """Run one transaction for the pending recipients; return whether to try another."""
        progress.attempts += 1
        try:
            progress.record(self._transaction(message, progress.pending))
        except Failure as e:
            progress.error = e
            self._log_failure(message, progress, e)
            return e.retry and progress.attempts < self.max_attempts
        except Ambiguous as e:
            if not progress.handed_off:
                raise AmbiguousHandoffError(f"{self._where()}: {e}") from e
            progress.fail_pending(f"may have been delivered: {e}")
        except BaseException:
            self._discard()  # the conversation is in an unknown state: never reuse it
            raise
        return bool(progress.pending) and progress.attempts < self.max_attempts

    def _transaction(self, message: OutgoingMessage, recipients: list[str]) -> Transaction:
        reused = self._conn is not None
        if self._connection().has_extn("pipelining"):
            return self._pipelined(message, recipients, reused=reused)
        tx = Transaction()
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

    def _pipelined(self, message: OutgoingMessage, recipients: list[str], *,
                   reused: bool) -> Transaction:
        """MAIL FROM, every RCPT TO and DATA in one write, their replies read in order (RFC
        2920): one round trip where there would be one a command. Nothing can be handed off
        before the body is sent, which waits for every reply, so the boundary is unchanged."""
        try:
            mail = self._pipeline_commands(message, recipients)
        except Dropped:
            if not reused:
                raise
            mail = self._pipeline_commands(message, recipients)  # as `_begin` does
        conn = self._connection()
        rcpts = [self._reply(conn.getreply) for _ in recipients]
        go_ahead = self._reply(conn.getreply)
        tx = Transaction()
        if mail.ok:
            for recipient, reply in zip(recipients, rcpts, strict=True):
                tx.add(recipient, reply)
        if not tx.accepted:
            if go_ahead.code == 354:  # a server that took DATA with no recipient: end it empty
                self._send_body(conn, b"")
                self._reply(conn.getreply)  # for no one: whatever it says, nothing was sent
            if mail.permanent:
                tx.bounced = dict.fromkeys(recipients, mail)
            else:
                self._expect_ok(mail, "MAIL FROM")
            return tx
        self._after_go_ahead(conn, go_ahead, message.data, tx)
        return tx

    def _pipeline_commands(self, message: OutgoingMessage, recipients: list[str]) -> Reply:
        """Send MAIL FROM, each RCPT TO and DATA at once; returns the reply to MAIL FROM (the
        others follow it). A connection lost before that reply costs no attempt."""
        conn = self._connection()
        if self._dirty:
            self._reset(conn)
        options = self._mail_options(conn, message)
        if "SMTPUTF8" in options:
            conn.command_encoding = "utf-8"
        mail = " ".join([f"MAIL FROM:{smtplib.quoteaddr(message.envelope_from)}", *options])
        lines = [mail, *(f"RCPT TO:{smtplib.quoteaddr(r)}" for r in recipients), "DATA"]
        self._dirty = True
        try:
            conn.send("".join(f"{line}\r\n" for line in lines))
        except smtplib.SMTPServerDisconnected as e:
            self._discard()
            raise Dropped(f"connection lost: {e}") from e
        return self._reply(conn.getreply)

    def _begin(self, message: OutgoingMessage) -> Reply:
        """MAIL FROM; a reused connection the server has dropped (idle timeout, 421) is replaced.

        Replacing it costs no attempt: nothing can have been handed off before MAIL FROM.
        """
        reused = self._conn is not None
        try:
            return self._mail_from(message)
        except Dropped:
            if not reused:
                raise
        return self._mail_from(message)

    def _mail_from(self, message: OutgoingMessage) -> Reply:
        conn = self._connection()
        if self._dirty:
            self._reset(conn)
        options = self._mail_options(conn, message)
        return self._reply(partial(conn.mail, message.envelope_from, options))

    def _reset(self, conn: smtplib.SMTP) -> None:
        """RSET the transaction a failure left open, or drop the connection."""
        reset = self._reply(conn.rset)
        if not reset.ok:
            self._discard()
            raise Dropped(f"RSET refused: {reset}")
        self._dirty = False

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

    def _data(self, conn: smtplib.SMTP, data: bytes, tx: Transaction) -> None:
        """DATA, the body, the final reply: the only phase where a failure can be ambiguous."""
        self._after_go_ahead(conn, self._reply(partial(conn.docmd, "DATA")), data, tx)

    def _after_go_ahead(self, conn: smtplib.SMTP, go_ahead: Reply, data: bytes,
                        tx: Transaction) -> None:
        """The body and the final reply, once DATA was answered `go_ahead`."""
        if go_ahead.permanent:
            tx.bounce_accepted(go_ahead)
            return
        if go_ahead.code != 354:
            raise Failure(f"DATA refused: {go_ahead}")
        self._send_body(conn, data)
        final = self._final_reply(conn)
        self._dirty = False
        if final.permanent:
            tx.bounce_accepted(final)
        elif not final.ok:
            raise Failure(f"message refused: {final}")
        else:
            tx.final = final

    def _send_body(self, conn: smtplib.SMTP, data: bytes) -> None:
        """sendall() returns only once every byte, the final dot last, is with the kernel."""
        try:
            conn.send(wire_body(data))
        except smtplib.SMTPServerDisconnected as e:
            self._discard()
            raise Dropped(f"connection lost before the message was fully sent: {e}") from e

    def _final_reply(self, conn: smtplib.SMTP) -> Reply:
        try:
            return self._reply(conn.getreply)
        except Dropped as e:
            if e.reply is not None:
                raise  # a 421 is an explicit refusal, safe to retry
            raise Ambiguous(f"no reply after the message was sent ({e})") from e

    def _reply(self, command: Callable[[], tuple[int, bytes]]) -> Reply:
        """Run one command; a lost connection or a 421 discards the connection (`Dropped`)."""
        try:
            reply = Reply.of(command())
        except smtplib.SMTPServerDisconnected as e:
            self._discard()
            raise Dropped(f"connection lost: {e}") from e
        if reply.code == 421:
            self._discard()
            raise Dropped(f"server closing connection: {reply}", reply)
        return reply

    def _expect_ok(self, reply: Reply, command: str) -> None:
        if not reply.ok:
            raise Failure(f"{command} refused: {reply}")

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

    def _setup_failure(self, e: OSError) -> Failure:
        """Refusals (5xx), missing extensions and TLS errors are configuration: retrying won't help.

        Not hammering an AUTH endpoint with a wrong password also avoids account lock-outs.
        """
        if isinstance(e, smtplib.SMTPResponseException):
            reply = Reply.of((e.smtp_code, e.smtp_error))
            return Failure(f"session refused: {reply}", retry=not reply.permanent)
        disconnected = isinstance(e, smtplib.SMTPServerDisconnected)
        fatal = isinstance(e, ssl.SSLError | smtplib.SMTPException) and not disconnected
        return Failure(f"cannot open session: {type(e).__name__}: {e}", retry=not fatal)

    def _discard(self) -> None:
        """Forget the connection without QUIT: its state is unknown or the server has gone."""
        conn, self._conn = self._conn, None
        self._dirty = False
        if conn is not None:
            conn.close()

    def _backoff(self, attempts: int) -> float:
        return jittered_backoff(attempts, base=self.backoff_seconds, cap=_MAX_BACKOFF_SECONDS)

    def _where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def _log_failure(self, message: OutgoingMessage, progress: Progress, e: Failure) -> None:
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
