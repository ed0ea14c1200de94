"""The local profile's SMTP sink: accepts mail on 127.0.0.1, stores each message once in a Maildir.

Each accepted message becomes one file in `<maildir>/new/`, written and fsynced before the 250
reply, so a 250 means the message is on disk. The file holds exactly the bytes received, with two
header lines prepended: `Return-Path: <envelope sender>` and `X-Original-To: <envelope recipients>`
(prepending headers leaves a DKIM signature valid). The DATA reply is `250 OK queued as <key>`,
where key is the file's Maildir key, so the transport's provider message id names the file.

Test mode (`simulate=True`, off by default), like GOV.UK Notify's research mode, decides a
recipient's fate by the start of its local part:

| local part starts with | RCPT reply |
|---|---|
| `bounce` | `550 5.1.1 mailbox unavailable`: a hard bounce |
| `defer` | `451 4.3.0 try again later`: the transport retries, then gives up (FAILED) |
| anything else, including `complaint` | accepted: complaints cannot be expressed over SMTP |
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from notify_pipeline import files

logger = logging.getLogger(__name__)

# Recipient simulator: local-part prefix -> RCPT reply (checked in order).
SIMULATED_REPLIES = {
    "bounce": "550 5.1.1 mailbox unavailable",
    "defer": "451 4.3.0 try again later",
}


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP protocol, without a cost it pays on every MAIL and RCPT command.

    aiosmtpd 1.4's `_getaddr` declares a `typing.Protocol` class each time it runs, about a
    tenth of the sink's CPU time per message; this one parses with the same functions and the
    same local-part limit, and returns the same values.
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        if not arg:
            return "", ""
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
        except HeaderParseError:
            return None, None
        addr: str = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest


class SinkController(Controller):
    """aiosmtpd's threaded `Controller`, which also learns the port the OS chose for port 0."""

    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # The listening socket exists now, before start() connects to it to finish its own start-up.
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class MaildirHandler:
    """aiosmtpd handler storing each message durably in a Maildir, with the optional simulator."""

    def __init__(self, maildir: Path, *, simulate: bool = False, pipelining: bool = True) -> None:
        for sub in ("tmp", "new", "cur"):  # mailbox.Maildir(create=True) skips an existing folder
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.maildir = maildir
        self.simulate = simulate
        self.pipelining = pipelining

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """Offer PIPELINING (RFC 2920) as real relays do: aiosmtpd answers commands that arrive
        together in order, one at a time."""
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self._simulated_refusal(address) if self.simulate else None
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        header = _envelope_header(envelope.mail_from or "", envelope.rcpt_tos)
        content = envelope.original_content or b""
        try:
            key = await asyncio.to_thread(self._store, header + content)
        except OSError:
            logger.exception("SMTP sink cannot store a message in %s", self.maildir)
            return "451 4.3.0 local storage failed"
        logger.debug("SMTP sink stored %s for %s", key, ", ".join(envelope.rcpt_tos))
        return f"250 OK queued as {key}"

    def _store(self, data: bytes) -> str:
        """Write to tmp/, fsync, rename into new/, fsync new/: the Maildir way to be crash-safe."""
        key = _maildir_key()
        new = self.maildir / "new" / key
        files.write_temp(self.maildir / "tmp", data, prefix=key).rename(new)
        files.fsync_directory(new.parent)
        return key

    @staticmethod
    def _simulated_refusal(address: str) -> str | None:
        local_part = address.rpartition("@")[0].lower()
        for prefix, reply in SIMULATED_REPLIES.items():
            if local_part.startswith(prefix):
                return reply
        return None


class BackgroundServer(ABC):
    """An aiosmtpd server in a background thread: start()/stop() or a `with` block.

    Port 0 picks a free port; `port` is the bound port once started, and a restarted server
    binds that same port again.
    """

    name = "the SMTP server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._controller: SinkController | None = None

    @property
    def port(self) -> int:
        return self._port

    @abstractmethod
    def _new_controller(self, port: int) -> SinkController:
        """A controller for this server, not yet started."""

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError(f"{self.name} is already running")
        controller = self._new_controller(self._port)
        controller.start()
        self._controller, self._port = controller, controller.port

    def stop(self) -> None:
        """Stop listening; safe to call when not running."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class MaildirSink(BackgroundServer):
    """The local SMTP sink, storing what it accepts as Maildir."""

    name = "the SMTP sink"

    def __init__(
        self, maildir: Path, *, host: str = "127.0.0.1", port: int = 2525, simulate: bool = False
    ) -> None:
        super().__init__(host, port)
        self.maildir = maildir
        self._handler = MaildirHandler(maildir, simulate=simulate)

    def _new_controller(self, port: int) -> SinkController:
        return SinkController(self._handler, hostname=self.host, port=port)


def run_sink(
    maildir: Path, host: str = "127.0.0.1", port: int = 2525, simulate: bool = False
) -> None:
    """Run the sink until SIGINT or SIGTERM (the `notify sink` command). Main thread only."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs each connection at INFO
    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with MaildirSink(maildir, host=host, port=port, simulate=simulate) as sink:
            logger.info(
                "SMTP sink listening on %s:%d, storing mail in %s (simulate=%s)",
                sink.host,
                sink.port,
                maildir,
                simulate,
            )
            stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _envelope_header(mail_from: str, recipients: list[str]) -> bytes:
    """Return-Path and X-Original-To lines, as a delivering MTA would prepend them."""
    to = ",\r\n ".join(recipients)
    return f"Return-Path: <{mail_from}>\r\nX-Original-To: {to}\r\n".encode()


def _maildir_key() -> str:
    """A unique Maildir file name (time.unique.host), also usable as a queue id (no spaces)."""
    host = "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname())
    return f"{int(time.time())}.{uuid.uuid4().hex}.{host}"

