"""Protocol peers that misbehave on purpose, on 127.0.0.1: an SMTP server and an SES proxy.

- `FaultySmtp`: a real aiosmtpd server storing what it accepts as Maildir (the sink's own
  handler), told per recipient and per attempt what to do instead: a reply code at RCPT or at
  the end of DATA (421, 450, 451, 452, 550, 552, 554), a dropped connection, or a stall in the
  DATA phase past the client's timeout. It can also restart itself, on the same port, once a
  given number of messages has been stored.
- `SesFaultProxy`: an HTTP proxy in front of moto's SES v2, told per request id and per attempt
  to answer throttling, a 5xx or an account error instead of relaying, or to relay the send to
  moto and drop the reply (the message was accepted; the caller cannot know).

Both count what reached them, so a caller can tell "delivered once" from "delivered twice".
Used by `tests/test_faults.py` and by `python -m benchmarks.reliability`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.http_peer import BackgroundHttp, QuietHandler
from notify_pipeline.delivery.ses import MESSAGE_ID_TAG, decode_tag_value
from notify_pipeline.sink import MaildirHandler, SinkController

# What a real server says with each code.
REPLIES = {
    "421": "421 4.3.2 service shutting down",
    "450": "450 4.2.1 mailbox busy, try later",
    "451": "451 4.3.0 local error in processing",
    "452": "452 4.2.2 insufficient system storage",
    "550": "550 5.1.1 mailbox unavailable",
    "552": "552 5.2.2 mailbox full",
    "554": "554 5.7.1 message rejected",
}
DROP = "drop"  # close the connection instead of replying
STALL = "stall"  # say nothing until the client has given up


@dataclass(frozen=True)
class SmtpFault:
    """One attempt's misbehaviour: `what` (a code in REPLIES, DROP or STALL) at `phase`.

    At "rcpt" the recipient's RCPT gets it. At "data" RCPT is accepted and the end of DATA gets
    it: DROP and STALL then store the message first, as a server whose reply was lost would.
    """

    phase: str
    what: str

    def __post_init__(self) -> None:
        if self.phase not in ("rcpt", "data") or (self.what not in REPLIES
                                                  and self.what not in (DROP, STALL)):
            raise ValueError(f"no such fault: {self.phase}:{self.what}")

    @classmethod
    def parse(cls, text: str) -> SmtpFault:
        """`rcpt:451`, `data:drop`, ..."""
        phase, _, what = text.partition(":")
        return cls(phase, what)


class _FaultyHandler(MaildirHandler):
    def __init__(self, peer: FaultySmtp, maildir: Path, *, pipelining: bool) -> None:
        super().__init__(maildir, pipelining=pipelining)
        self.peer = peer

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.peer.restart_due():
            _drop(server)
            return REPLIES["421"]
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        fault = self.peer.next_fault(address)
        if fault is not None and fault.phase == "rcpt":
            if fault.what == DROP:
                _drop(server)
                return REPLIES["421"]
            if fault.what == STALL:
                await asyncio.sleep(self.peer.stall_seconds)
                return REPLIES["451"]
            return REPLIES[fault.what]
        if fault is not None:
            self.peer.at_data[id(envelope)] = fault
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.peer.at_data.pop(id(envelope), None)
        if fault is None or fault.what in (DROP, STALL):
            reply = await super().handle_DATA(server, session, envelope)
            self.peer.stored(envelope.rcpt_tos)
            if fault is None:
                return reply
            if fault.what == STALL:
                await asyncio.sleep(self.peer.stall_seconds)
            _drop(server)
            return reply
        return REPLIES[fault.what]

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.peer.at_data.pop(id(envelope), None)
        return "250 OK"


F = TypeVar("F")


class FaultPlan(Generic[F]):
    """The faults planned per key, one per attempt: once a key's faults are used up it is served
    normally, unless `repeat` holds it to its last fault for ever. `attempts` counts every
    attempt per key, faulty or not. Thread-safe: both peers serve from several threads."""

    def __init__(self, plan: Mapping[str, Sequence[F]], *, repeat: bool) -> None:
        self._faults = {key: list(faults) for key, faults in plan.items()}
        self.repeat = repeat
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def next(self, key: str) -> F | None:
        with self._lock:
            self.attempts[key] += 1
            faults = self._faults.get(key)
            if not faults:
                return None
            return faults[0] if self.repeat and len(faults) == 1 else faults.pop(0)


def _drop(server: SMTP) -> None:
    transport = server.transport
    if transport is None:
        return
    if not isinstance(transport, asyncio.Transport):
        raise TypeError(f"cannot cut a {type(transport).__name__} short")
    transport.abort()


class FaultySmtp:
    """An aiosmtpd server on 127.0.0.1 that follows `plan`: recipient -> faults, one per attempt.

    A recipient's attempts are its RCPT commands; once its faults are used up it is served
    normally, unless `repeat` holds it to its last fault for ever. `restart_after(n, seconds)`
    stops the server at the first MAIL after the n-th stored message and starts it again on the
    same port `seconds` later. `pipelining` offers PIPELINING (RFC 2920), as the sink does.
    """

    def __init__(self, maildir: Path, plan: Mapping[str, Sequence[SmtpFault]] | None = None, *,
                 repeat: bool = False, stall_seconds: float = 2.0, port: int = 0,
                 pipelining: bool = True) -> None:
        self.maildir = maildir
        by_recipient = {address.lower(): faults for address, faults in (plan or {}).items()}
        self.faults = FaultPlan(by_recipient, repeat=repeat)
        self.attempts = self.faults.attempts  # RCPTs per recipient
        self.stall_seconds = stall_seconds
        self.copies: Counter[str] = Counter()  # stored messages per recipient
        self.at_data: dict[int, SmtpFault] = {}
        self.restarts = 0
        self._restart: tuple[int, float] | None = None
        self._lock = threading.Lock()
        self._handler = _FaultyHandler(self, maildir, pipelining=pipelining)
        self._controller: SinkController | None = None
        self.port = port

    def start(self) -> FaultySmtp:
        controller = SinkController(self._handler, hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller, self.port = controller, controller.port
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> FaultySmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_after(self, messages: int, down_seconds: float) -> None:
        self._restart = (messages, down_seconds)

    def next_fault(self, recipient: str) -> SmtpFault | None:
        return self.faults.next(recipient.lower())

    def stored(self, recipients: Sequence[str]) -> None:
        with self._lock:
            self.copies.update(r.lower() for r in recipients)

    def restart_due(self) -> bool:
        """True once, at the first MAIL after the planned number of stored messages: the
        restart then runs on a thread of its own (the server's own loop cannot stop itself)."""
        with self._lock:
            if self._restart is None or sum(self.copies.values()) < self._restart[0]:
                return False
            _, down = self._restart
            self._restart = None
            self.restarts += 1
        threading.Thread(target=self._bounce, args=(down,), daemon=True).start()
        return True

    def _bounce(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


# --- SES ----------------------------------------------------------------------------------------

# Answers instead of relaying: HTTP status and the SES error code (x-amzn-ErrorType), as SES v2
# sends them (tests/test_ses.py scripts its peer from the same table).
SES_ANSWERS = {
    "429": (429, "TooManyRequestsException"),
    "throttling": (400, "Throttling"),
    "limit": (400, "LimitExceededException"),
    "500": (500, "InternalFailure"),
    "503": (503, "ServiceUnavailable"),
    "suspended": (400, "AccountSuspendedException"),
    "paused": (400, "SendingPausedException"),
    "no-config-set": (404, "NotFoundException"),
    "denied": (403, "AccessDeniedException"),
    "bad-request": (400, "BadRequestException"),
    "rejected": (400, "MessageRejected"),
    "mail-from": (400, "MailFromDomainNotVerifiedException"),
}
LOST = "lost"  # relay to moto, then close the connection without the reply
SEND_PATH = "/outbound-emails"


class SesFaultProxy:
    """An HTTP proxy in front of moto: sends of a planned request id get their faults, one per
    attempt (or the last for ever, with `repeat`); everything else is relayed unchanged."""

    def __init__(self, upstream: str, plan: Mapping[str, Sequence[str]] | None = None, *,
                 repeat: bool = False) -> None:
        for action in (a for faults in (plan or {}).values() for a in faults):
            if action not in SES_ANSWERS and action != LOST:
                raise ValueError(f"no such SES fault: {action}")
        self.upstream = urlsplit(upstream)
        self.faults = FaultPlan(plan or {}, repeat=repeat)
        self.attempts = self.faults.attempts  # send requests per request id
        self.relayed: defaultdict[str, int] = defaultdict(int)  # sends moto took per request id
        self._lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.serve(self, body)

        self._http = BackgroundHttp(Handler)
        self.url = self._http.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SesFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        key = _request_id(body) if handler.path.endswith(SEND_PATH) else None
        action = self.faults.next(key) if key is not None else None
        if action in SES_ANSWERS:
            answer_ses_error(handler, action)
            return
        status, headers, data = self._relay(handler, body)
        if key is not None and status == 200:
            with self._lock:
                self.relayed[key] += 1
        if action == LOST:
            handler.close_connection = True
            handler.connection.close()  # moto took it; the reply never leaves
            return
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _relay(self, handler: BaseHTTPRequestHandler,
               body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname or "", self.upstream.port,
                                          timeout=30)
        try:
            conn.request("POST", handler.path, body, dict(handler.headers))
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        skip = {"content-length", "transfer-encoding", "connection", "date", "server"}
        headers = [(n, v) for n, v in response.getheaders() if n.lower() not in skip]
        return response.status, headers, data


def _request_id(body: bytes) -> str | None:
    """The request id a send carries in its `message_id` tag."""
    try:
        tags = json.loads(body).get("EmailTags", [])
        tag = next(t["Value"] for t in tags if t["Name"] == MESSAGE_ID_TAG)
        return decode_tag_value(str(tag))
    except (ValueError, KeyError, StopIteration, AttributeError):
        return None


def answer_ses_error(handler: BaseHTTPRequestHandler, action: str) -> None:
    """Reply to the request in `handler` as SES does with the error `SES_ANSWERS[action]`."""
    status, code = SES_ANSWERS[action]
    body = json.dumps({"message": f"{code} (fault injected)"}).encode()
    handler.send_response(status)
    handler.send_header("x-amzn-ErrorType", code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
