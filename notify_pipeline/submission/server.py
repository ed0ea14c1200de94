"""The SMTP submission server (`notify smtp-server`), on aiosmtpd.

A session must STARTTLS before anything but EHLO/NOOP/QUIT, then AUTH (PLAIN or LOGIN) with a
credential of a service that has `advanced.smtp`, then send from that service's address. Each
accepted message is one send request on the service's inbox: the 250 reply to DATA means the
request is written, and a 451 means nothing was and the client should try again. Password
checks, message parsing and inbox writes run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from notify_pipeline.defaults import MAX_REQUEST_BYTES
from notify_pipeline.errors import ConfigError
from notify_pipeline.policy import Domains
from notify_pipeline.registry import Registry, Service
from notify_pipeline.sink import BackgroundServer, SinkController
from notify_pipeline.submission.convert import message_fields
from notify_pipeline.submission.credentials import CredentialStore
from notify_pipeline.submission.errors import MessageRefused, SubmissionReason
from notify_pipeline.submission.sender import sender_of
from notify_pipeline.submission.submitter import SubmitterFactory
from notify_pipeline.submission.throttle import FailureThrottle

logger = logging.getLogger(__name__)

MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"
_AIOSMTPD_MUST_STARTTLS = "530 Must issue a STARTTLS command first"
BAD_CREDENTIALS = "535 5.7.8 Authentication credentials invalid"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure"
TRY_LATER = "451 4.3.0 The inbox is unavailable; try again later"
REPLY_FOR = {
    SubmissionReason.UNKNOWN_SERVICE: "550 5.7.1",
    SubmissionReason.SMTP_NOT_ENABLED: "550 5.7.1",
    SubmissionReason.UNKNOWN_CREDENTIAL: "535 5.7.8",
    SubmissionReason.SENDER_NOT_ALLOWED: "550 5.7.1",
    SubmissionReason.RECIPIENT_NOT_ALLOWED: "550 5.7.1",
    SubmissionReason.REPLY_TO_NOT_ENABLED: "550 5.7.1",
    SubmissionReason.INVALID_MESSAGE: "554 5.6.0",
    SubmissionReason.TOO_LARGE: "552 5.3.4",
}
_UNSAFE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Login:
    """Who a session authenticated as (aiosmtpd keeps it as `session.auth_data`)."""

    username: str
    service: str


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with RFC 3207's wording for the STARTTLS refusal, and an AUTH whose
    credential check is awaited (aiosmtpd calls its authenticator synchronously)."""

    _pending: LoginPassword | None = None

    async def push(self, status: AnyStr) -> None:
        if status == _AIOSMTPD_MUST_STARTTLS:
            await super().push(MUST_STARTTLS)
        else:
            await super().push(status)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        """Keep the decoded pair for `_check`; the base class's exchange parsed it."""
        self._pending = auth_data
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check(await super().auth_LOGIN(_, args))

    async def _check(self, parsed: AuthResult) -> AuthResult:
        pending, self._pending = self._pending, None
        if pending is None:  # the exchange failed (bad base64, aborted) and was answered
            return parsed
        assert isinstance(self.event_handler, SubmissionHandler) and self.session is not None
        return await self.event_handler.check_login(self.session, pending)


class SubmissionHandler:
    """aiosmtpd handler: credentials, sender and recipient rules, and the hand-off per message."""

    def __init__(
        self,
        *,
        credentials: CredentialStore,
        registry: Callable[[], Registry],
        domains: Domains,
        submitter_for: SubmitterFactory,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self.credentials = credentials
        self.registry = registry
        self.domains = domains
        self.submitter_for = submitter_for
        self.throttle = throttle or FailureThrottle()

    async def check_login(self, session: Session, pair: LoginPassword) -> AuthResult:
        try:
            username, password = pair.login.decode(), pair.password.decode()
        except UnicodeDecodeError:
            username, password = "", ""
        try:
            service_id = await asyncio.to_thread(self.credentials.verify, username, password)
        except (OSError, ValueError, KeyError):
            logger.exception("SMTP AUTH cannot read the credential store")
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if service_id is None:
            delay = await self.throttle.failed(_peer_address(session))
            logger.info("SMTP AUTH failed from %s (reply delayed %.1f s)",
                        _peer_address(session), delay)
            return AuthResult(success=False, handled=False)
        service = self.registry().get(service_id)
        if service is None or not service.advanced.smtp:
            return AuthResult(success=False, handled=False, message=(
                f"535 5.7.8 {SubmissionReason.SMTP_NOT_ENABLED.value}: service {service_id!r}"
                " has not enabled SMTP submission"))
        logger.info("SMTP AUTH as %s for %s", username, service_id)
        return AuthResult(success=True, auth_data=Login(username, service_id))

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        try:
            sender_of(self._service(session), self.domains, address)
        except MessageRefused as exc:
            return _reply(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            service = self._service(session)
        except MessageRefused as exc:
            return _reply(exc)
        if not service.allows_recipient(address):
            return _reply(MessageRefused(
                SubmissionReason.RECIPIENT_NOT_ALLOWED,
                f"{address} is not on the allow list of {service.id!r}",
            ))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            service = self._service(session)
            request_id = await asyncio.to_thread(self._submit, service, envelope)
        except MessageRefused as exc:
            return _reply(exc)
        except ConfigError:  # the server's inbox, not the message: a ValueError, but not 554
            logger.exception("SMTP submission cannot reach its inbox; answered 451")
            return TRY_LATER
        except ValueError as exc:  # the submitter refused the request: the wire format
            too_large = getattr(exc, "reason", None) == SubmissionReason.TOO_LARGE.value
            reason = SubmissionReason.TOO_LARGE if too_large else SubmissionReason.INVALID_MESSAGE
            return _reply(MessageRefused(reason, str(exc)))
        except Exception:
            logger.exception("SMTP submission could not hand a message over; answered 451")
            return TRY_LATER
        logger.info("SMTP submission queued %s for %s", request_id, service.id)
        return f"250 2.0.0 OK queued as {request_id}"

    def _submit(self, service: Service, envelope: Envelope) -> str:
        fields = message_fields(
            envelope.original_content or b"", service=service, domains=self.domains,
            mail_from=envelope.mail_from or "", recipients=envelope.rcpt_tos,
        )
        return self.submitter_for(service.id).send(**fields)

    def _service(self, session: Session) -> Service:
        """The session's service, as the registry has it now."""
        login = session.auth_data
        assert isinstance(login, Login)  # aiosmtpd refuses MAIL/RCPT/DATA before AUTH
        service = self.registry().get(login.service)
        if service is None or not service.advanced.smtp:
            raise MessageRefused(SubmissionReason.SMTP_NOT_ENABLED,
                                 f"service {login.service!r} has not enabled SMTP submission")
        return service


def _reply(exc: MessageRefused) -> str:
    """One printable ASCII line: the reason's code, then the sentence."""
    text = _UNSAFE.sub("?", f"{exc.reason.value}: {exc.message}")[:400]
    return f"{REPLY_FOR[exc.reason]} {text}"


def _not_login_data_warning(record: logging.LogRecord) -> bool:
    """aiosmtpd 1.4 warns at every AUTH that a field it sets itself is deprecated."""
    return "login_data is deprecated" not in record.getMessage()


def _peer_address(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class _Controller(SinkController):
    """The sink's controller (it learns the port the OS chose), building submission sessions."""

    def factory(self) -> SMTP:
        return SubmissionSMTP(self.handler, **self.SMTP_kwargs)


class SubmissionServer(BackgroundServer):
    """The submission server in a background thread (see `BackgroundServer`)."""

    name = "the submission server"

    def __init__(
        self, handler: SubmissionHandler, *, tls: ssl.SSLContext, host: str = "127.0.0.1",
        port: int = 587, server_hostname: str = "localhost",
    ) -> None:
        super().__init__(host, port)
        self.handler = handler
        self._tls = tls
        self._server_hostname = server_hostname

    def _new_controller(self, port: int) -> SinkController:
        return _Controller(
            self.handler, hostname=self.host, port=port,
            server_hostname=self._server_hostname, tls_context=self._tls,
            require_starttls=True, auth_required=True, auth_require_tls=True,
            data_size_limit=MAX_REQUEST_BYTES,
        )


def serve_until_stopped(server: SubmissionServer, *, announce: Callable[[str], None]) -> None:
    """Run until SIGINT or SIGTERM (the `notify smtp-server` command). Main thread only."""
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)  # aiosmtpd logs each command at INFO
    mail_log.addFilter(_not_login_data_warning)
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stopping.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            announce(f"SMTP submission on {server.host}:{server.port} (STARTTLS, then AUTH)")
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

