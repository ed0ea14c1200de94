"""The SMTP transport against real servers on 127.0.0.1: the sink, scripted aiosmtpd handlers, and a
raw socket server that misbehaves at chosen phases (drops, hangs, odd replies)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify_pipeline.delivery.base import OutgoingMessage, RecipientStatus
from notify_pipeline.delivery.smtp import SmtpTransport
from notify_pipeline.delivery.smtp_wire import queue_id, wire_body
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    ConfigError,
    PermanentDeliveryError,
    RecipientsDeferredError,
    RetryableDeliveryError,
)
from notify_pipeline.sink import MaildirHandler, MaildirSink, SinkController

PASSWORD = "s3cret-Pa55word"
BODY = (
    b"From: Lookup <lookup@notify.example.org>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"caf\xc3\xa9\r\n"
)


def outgoing(*recipients: str, data: bytes = BODY, sender: str = "lookup@notify.example.org"):
    return OutgoingMessage(
        service="lookup-notices",
        message_id="m-1",
        envelope_from=sender,
        recipients=recipients or ("someone@example.org",),
        data=data,
    )


def transport(port: int, **options) -> SmtpTransport:
    settings = {"timeout": 5.0, "backoff_seconds": 0.001, **options}
    return SmtpTransport(host="127.0.0.1", port=port, **settings)


def statuses(result) -> dict[str, RecipientStatus]:
    return {outcome.recipient: outcome.status for outcome in result.outcomes}


# --- servers ---------------------------------------------------------------------------------


class Scripted(MaildirHandler):
    """The sink's handler, with replies a test chooses per phase and a record of what arrived.

    `replies[phase]` is a queue of replies given before falling back to the sink's own behaviour;
    RCPT replies are keyed by recipient.
    """

    def __init__(self, maildir: Path, replies: dict[str, list[str]] | None = None) -> None:
        super().__init__(maildir)
        self.replies = replies or {}
        self.calls: Counter[str] = Counter()
        self.peers: set[object] = set()
        self.envelopes: list[tuple[list[str], list[str], bool]] = []
        self.keys: list[str] = []
        self.mechanisms: list[str] = []

    def _scripted(self, phase: str) -> str | None:
        self.calls[phase] += 1
        queue = self.replies.get(phase)
        return queue.pop(0) if queue else None

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.peers.add(session.peer)
        if reply := self._scripted("MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if reply := self._scripted(address):
            return reply
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server, session, envelope):
        if reply := self._scripted("DATA"):
            return reply
        self.envelopes.append((envelope.rcpt_tos, envelope.mail_options, session.ssl is not None))
        reply = await super().handle_DATA(server, session, envelope)
        self.keys.append(reply.rsplit(" ", 1)[1])
        return reply

    async def handle_RSET(self, server, session, envelope):
        self.calls["RSET"] += 1
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.calls["QUIT"] += 1
        return "221 Bye"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.mechanisms.append(mechanism)
        ok = auth_data == LoginPassword(b"lookup", PASSWORD.encode())
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[Scripted, int]]]:
    """Start scripted aiosmtpd servers on free ports; stopped after the test."""
    controllers: list[SinkController] = []

    def start(
        replies: dict[str, list[str]] | None = None, *, auth: bool = False, **smtp_options
    ) -> tuple[Scripted, int]:
        handler = Scripted(tmp_path / f"mail{len(controllers)}", replies)
        if auth:
            smtp_options["authenticator"] = handler.authenticate
        controller = SinkController(handler, hostname="127.0.0.1", port=0, **smtp_options)
        controller.start()
        controllers.append(controller)
        return handler, controller.port

    yield start
    for controller in controllers:
        controller.stop()


DROP = "<drop>"  # close the connection instead of replying
HANG = "<hang>"  # never reply; wait for the client to go away
RAW_DEFAULTS = {"GREETING": "220 raw.test ESMTP", "EHLO": "250-raw.test\r\n250 SIZE 100000000"}


class RawSMTP(socketserver.ThreadingTCPServer):
    """A hand-driven SMTP server: `script(phase, connection, count)` may override any reply.

    Phases: GREETING, EHLO, MAIL, RCPT, DATA (the 354), BODY (before reading it; only DROP or
    HANG make sense), END (the final reply), RSET, QUIT. `connection` counts from 1; `count` is how
    often the phase has occurred on this connection.
    """

    daemon_threads = True

    def __init__(self, script: Callable[[str, int, int], str | None]) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.script = script
        self.connections = 0
        self.bodies: list[bytes] = []
        self.phases: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _RawHandler(socketserver.StreamRequestHandler):
    server: RawSMTP

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
            self.connection_number = self.server.connections
        self.seen: Counter[str] = Counter()
        if not self.answer("GREETING"):
            return
        while line := self.rfile.readline():
            verb = line.split()[0].decode().upper() if line.strip() else ""
            phase = "EHLO" if verb in ("EHLO", "HELO") else verb
            if not self.answer(phase, "354 go ahead" if phase == "DATA" else "250 OK"):
                return
            if phase == "QUIT" or (phase == "DATA" and not self.data_phase()):
                return

    def data_phase(self) -> bool:
        if self.last_reply[:3] != "354":
            return True
        if not self.answer("BODY", ""):
            return False
        body = b"".join(iter(self.rfile.readline, b".\r\n"))
        self.server.bodies.append(body)
        return self.answer("END", f"250 2.0.0 Ok: queued as Q{len(self.server.bodies)}")

    def answer(self, phase: str, default: str = "250 OK") -> bool:
        """Reply to `phase`, or act as the script says; False when the connection is over."""
        self.seen[phase] += 1
        with self.server.lock:
            self.server.phases[phase] += 1
        action = self.server.script(phase, self.connection_number, self.seen[phase])
        reply = action or RAW_DEFAULTS.get(phase, default)
        if reply == DROP:
            return False
        if reply == HANG:
            self.rfile.read()
            return False
        self.last_reply = reply
        if reply:
            self.wfile.write(reply.encode() + b"\r\n")
        return True


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[str, int, int], str | None]], RawSMTP]]:
    servers: list[RawSMTP] = []

    def start(script: Callable[[str, int, int], str | None]) -> RawSMTP:
        server = RawSMTP(script)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def on(phase: str, reply: str, *, connection: int | None = None, count: int | None = None):
    """A RawSMTP script: `reply` at `phase`, optionally only on one connection or occurrence."""

    def script(seen: str, conn: int, n: int) -> str | None:
        hit = seen == phase and connection in (None, conn) and count in (None, n)
        return reply if hit else None

    return script


# --- the happy path and connection reuse -----------------------------------------------------


def test_delivers_to_the_sink_and_names_the_stored_file(tmp_path: Path) -> None:
    with MaildirSink(tmp_path, port=0) as sink, transport(sink.port) as smtp:
        result = smtp.send(outgoing("a@example.org"))

    (path,) = (tmp_path / "new").iterdir()
    assert result.provider_message_id == path.name
    (outcome,) = result.outcomes
    assert (outcome.recipient, outcome.status, outcome.code) == ("a@example.org", "accepted", 250)
    assert path.read_bytes().endswith(b"\r\n" + BODY)


def test_fifty_sends_share_one_connection_and_store_fifty_files(serve) -> None:
    handler, port = serve()
    with transport(port) as smtp:
        ids = {smtp.send(outgoing(f"r{i}@example.org")).provider_message_id for i in range(50)}

    assert len(handler.peers) == 1
    assert handler.calls["RSET"] == 0
    files = list((handler.maildir / "new").iterdir())
    assert {path.name for path in files} == ids
    assert len(files) == 50
    assert all(path.read_bytes().endswith(BODY) for path in files)


def test_body_is_dot_stuffed_and_line_ends_normalised_on_the_wire(serve) -> None:
    handler, port = serve()
    data = b"Subject: x\n\n.\n..two\r.three\r\nlast"
    with transport(port) as smtp:
        key = smtp.send(outgoing(data=data)).provider_message_id

    stored = (handler.maildir / "new" / str(key)).read_bytes()
    assert stored.endswith(b"Subject: x\r\n\r\n.\r\n..two\r\n.three\r\nlast\r\n")


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".\nx", b"..\r\nx\r\n.\r\n"),
        (b"a\rb\n", b"a\r\nb\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_wire_body(data: bytes, wire: bytes) -> None:
    assert wire_body(data) == wire


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("2.0.0 Ok: queued as ABC123", "ABC123"),
        ("OK queued as 1700000000.abc.host", "1700000000.abc.host"),
        ("OK id=1abcDE-000123-AB", "1abcDE-000123-AB"),
        ("OK", None),
    ],
)
def test_queue_id(reply: str, expected: str | None) -> None:
    assert queue_id(reply) == expected


def test_eight_bit_body_and_utf8_address_use_their_extensions(serve) -> None:
    handler, port = serve()
    with transport(port) as smtp:
        result = smtp.send(outgoing("jürgen@example.org"))

    assert statuses(result) == {"jürgen@example.org": "accepted"}
    ((recipients, options, _),) = handler.envelopes
    assert recipients == ["jürgen@example.org"]
    assert {"BODY=8BITMIME", "SMTPUTF8", f"SIZE={len(BODY)}"} <= set(options)


def test_utf8_address_without_server_support_is_permanent(raw) -> None:
    server = raw(lambda *_: None)
    with transport(server.port) as smtp, pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
        smtp.send(outgoing("jürgen@example.org"))

    assert server.phases["MAIL"] == 0


# --- recipients: mixed outcomes and retries --------------------------------------------------


def test_simulator_gives_mixed_outcomes_and_stores_only_the_accepted(tmp_path: Path) -> None:
    message = outgoing("ok@example.org", "bounce@example.org", "defer@example.org")
    with MaildirSink(tmp_path, port=0, simulate=True) as sink, transport(sink.port) as smtp:
        result = smtp.send(message)

    outcomes = {o.recipient: (o.status, o.code, o.diagnostic) for o in result.outcomes}
    assert outcomes["bounce@example.org"] == ("bounced", 550, "5.1.1 mailbox unavailable")
    assert outcomes["defer@example.org"] == ("failed", 451, "4.3.0 try again later")
    assert outcomes["ok@example.org"][:2] == ("accepted", 250)
    assert [o.recipient for o in result.outcomes] == list(message.recipients)
    (path,) = (tmp_path / "new").iterdir()
    assert path.name == result.provider_message_id
    assert b"X-Original-To: ok@example.org\r\n" in path.read_bytes()


def test_deferred_recipient_is_retried_in_a_new_transaction(serve) -> None:
    handler, port = serve({"b@example.org": ["451 4.2.0 busy"]})
    with transport(port) as smtp:
        result = smtp.send(outgoing("a@example.org", "b@example.org"))

    assert statuses(result) == {"a@example.org": "accepted", "b@example.org": "accepted"}
    assert [recipients for recipients, _, _ in handler.envelopes] == [
        ["a@example.org"],
        ["b@example.org"],
    ]
    assert result.provider_message_id == handler.keys[0]


def test_no_data_when_no_recipient_is_accepted_and_rset_before_retrying(serve) -> None:
    handler, port = serve({"a@example.org": ["452 4.2.2 mailbox full"] * 3})
    with transport(port) as smtp, pytest.raises(RecipientsDeferredError) as deferred:
        smtp.send(outgoing("a@example.org"))

    result = deferred.value.result  # what stands if this was the message's last attempt
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.code) == ("failed", 452)
    assert result.provider_message_id is None
    assert handler.calls["DATA"] == 0
    assert handler.calls["MAIL"] == 3
    assert handler.calls["RSET"] == 2  # the open transactions, on the one connection
    assert len(handler.peers) == 1


def test_duplicate_recipients_are_sent_once(serve) -> None:
    handler, port = serve()
    with transport(port) as smtp:
        result = smtp.send(outgoing("a@example.org", "a@example.org"))

    assert [o.recipient for o in result.outcomes] == ["a@example.org"]
    assert handler.envelopes[0][0] == ["a@example.org"]


# --- MAIL FROM and DATA replies --------------------------------------------------------------


def test_permanent_refusal_of_mail_from_bounces_everyone(serve) -> None:
    handler, port = serve({"MAIL": ["550 5.7.1 sender not allowed"]})
    with transport(port) as smtp:
        result = smtp.send(outgoing("a@example.org", "b@example.org"))

    assert {(o.status, o.code, o.diagnostic) for o in result.outcomes} == {
        ("bounced", 550, "5.7.1 sender not allowed")
    }
    assert handler.calls["DATA"] == 0


def test_temporary_refusal_of_mail_from_is_retried_then_raised(serve) -> None:
    handler, port = serve({"MAIL": ["451 4.3.0 later"] * 3})
    with transport(port) as smtp, pytest.raises(RetryableDeliveryError) as raised:
        smtp.send(outgoing())

    assert handler.calls["MAIL"] == 3
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "451 4.3.0 later" in str(raised.value)


def test_temporary_refusal_of_mail_from_then_success(serve) -> None:
    handler, port = serve({"MAIL": ["451 4.3.0 later"]})
    with transport(port) as smtp:
        result = smtp.send(outgoing())

    assert statuses(result) == {"someone@example.org": "accepted"}
    assert handler.calls["MAIL"] == 2


def test_permanent_refusal_of_the_message_bounces_the_accepted(serve) -> None:
    handler, port = serve({"DATA": ["554 5.6.0 content rejected"]})
    with transport(port) as smtp:
        result = smtp.send(outgoing("a@example.org", "b@example.org"))

    assert {(o.status, o.code) for o in result.outcomes} == {("bounced", 554)}
    assert list((handler.maildir / "new").iterdir()) == []


def test_temporary_refusal_of_the_message_is_retried_and_stored_once(serve) -> None:
    handler, port = serve({"DATA": ["451 4.3.0 disk busy"]})
    with transport(port) as smtp:
        result = smtp.send(outgoing())

    assert statuses(result) == {"someone@example.org": "accepted"}
    assert len(list((handler.maildir / "new").iterdir())) == 1
    assert handler.calls["RSET"] == 0  # a final reply ends the transaction


def test_permanent_refusal_of_the_data_command(raw) -> None:
    server = raw(on("DATA", "554 5.3.4 message too big for system"))
    with transport(server.port) as smtp:
        result = smtp.send(outgoing())

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.code) == ("bounced", 554)
    assert server.bodies == []


def test_temporary_refusal_of_the_data_command_resets_and_retries(raw) -> None:
    server = raw(on("DATA", "451 4.3.0 try later", count=1))
    with transport(server.port) as smtp:
        result = smtp.send(outgoing())

    assert statuses(result) == {"someone@example.org": "accepted"}
    assert result.provider_message_id == "Q1"
    assert server.phases["RSET"] == 1
    assert server.connections == 1


# --- the hand-off boundary: exactly once -----------------------------------------------------


def test_connection_lost_after_the_body_is_ambiguous_and_not_retried(raw) -> None:
    server = raw(on("END", DROP))
    with transport(server.port) as smtp, pytest.raises(AmbiguousHandoffError) as raised:
        smtp.send(outgoing())

    assert len(server.bodies) == 1
    assert server.connections == 1
    assert f"127.0.0.1:{server.port}" in str(raised.value)


def test_no_reply_after_the_body_times_out_as_ambiguous(raw) -> None:
    server = raw(on("END", HANG))
    with transport(server.port, timeout=0.3) as smtp, pytest.raises(AmbiguousHandoffError):
        smtp.send(outgoing())

    assert len(server.bodies) == 1


def test_connection_lost_before_data_is_retried_then_raised(raw) -> None:
    server = raw(on("DATA", DROP))
    with transport(server.port) as smtp, pytest.raises(RetryableDeliveryError, match="3 attempts"):
        smtp.send(outgoing())

    assert server.connections == 3
    assert server.bodies == []


def test_connection_lost_while_sending_the_body_is_retryable(raw) -> None:
    server = raw(on("BODY", DROP))
    big = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 200_000  # more than socket buffers
    with transport(server.port, max_attempts=2) as smtp, pytest.raises(RetryableDeliveryError):
        smtp.send(outgoing(data=big))

    assert server.connections == 2


def test_closing_421_as_final_reply_is_retried_on_a_new_connection(raw) -> None:
    server = raw(on("END", "421 4.3.2 shutting down", connection=1))
    with transport(server.port) as smtp:
        result = smtp.send(outgoing())

    assert statuses(result) == {"someone@example.org": "accepted"}
    assert server.connections == 2
    assert len(server.bodies) == 2  # the first was refused, not accepted


def test_ambiguity_after_another_transaction_succeeded_fails_only_the_rest(raw) -> None:
    def script(phase: str, connection: int, count: int) -> str | None:
        if phase == "RCPT" and connection == 1 and count == 2:
            return "451 4.2.0 busy"
        return DROP if phase == "END" and count == 2 else None

    server = raw(script)
    with transport(server.port) as smtp:
        result = smtp.send(outgoing("a@example.org", "b@example.org"))

    outcomes = {o.recipient: o for o in result.outcomes}
    assert outcomes["a@example.org"].status == "accepted"
    assert outcomes["b@example.org"].status == "failed"
    assert "may have been delivered" in outcomes["b@example.org"].diagnostic
    assert result.provider_message_id == "Q1"
    assert len(server.bodies) == 2


# --- reconnecting ------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("closing", [DROP, "421 4.4.2 idle timeout"])
def test_server_closing_an_idle_connection_costs_no_attempt(
        raw, closing: str, pipelined: bool) -> None:
    dies = on("MAIL", closing, count=2)  # every connection dies at its second message
    server = raw(pipelining(dies) if pipelined else dies)
    with transport(server.port, max_attempts=1) as smtp:
        results = [smtp.send(outgoing()) for _ in range(3)]

    assert [r.provider_message_id for r in results] == ["Q1", "Q2", "Q3"]
    assert server.connections == 3


def test_sink_restart_between_sends_reconnects_transparently(tmp_path: Path) -> None:
    sink = MaildirSink(tmp_path, port=0)
    with sink, transport(sink.port, max_attempts=1) as smtp:
        smtp.send(outgoing())
        sink.stop()
        sink.start()
        result = smtp.send(outgoing())

    assert statuses(result) == {"someone@example.org": "accepted"}
    assert len(list((tmp_path / "new").iterdir())) == 2


def test_connection_refused_is_retryable(unused_port: int) -> None:
    with transport(unused_port) as smtp, pytest.raises(RetryableDeliveryError, match="3 attempts"):
        smtp.send(outgoing())


@pytest.mark.parametrize(("greeting", "connections"), [("421 4.3.2 busy", 3), ("554 no", 1)])
def test_refused_greeting(raw, greeting: str, connections: int) -> None:
    server = raw(on("GREETING", greeting))
    with transport(server.port) as smtp, pytest.raises(RetryableDeliveryError, match=greeting):
        smtp.send(outgoing())

    assert server.connections == connections  # a 5xx greeting is not worth retrying now


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_close_says_quit_and_is_safe_to_repeat(serve) -> None:
    handler, port = serve()
    smtp = transport(port)
    smtp.send(outgoing())
    smtp.close()
    smtp.close()

    assert handler.calls["QUIT"] == 1


def test_close_after_the_server_went_away_does_not_raise(tmp_path: Path) -> None:
    sink = MaildirSink(tmp_path, port=0)
    with sink:
        smtp = transport(sink.port)
        smtp.send(outgoing())
    smtp.close()


# --- TLS and authentication --------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC keys: fast to make)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notify test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(serve, certificate):
    """aiosmtpd requiring STARTTLS and AUTH; returns (handler, port, client context)."""
    cert_path, key_path = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)

    def start(**options):
        handler, port = serve(
            tls_context=server_context,
            require_starttls=True,
            auth_required=True,
            auth=True,
            **options,
        )
        return handler, port, ssl.create_default_context(cafile=str(cert_path))

    return start


@pytest.mark.parametrize(("excluded", "mechanism"), [([], "PLAIN"), (["PLAIN"], "LOGIN")])
def test_starttls_and_auth(tls_server, excluded: list[str], mechanism: str) -> None:
    handler, port, context = tls_server(auth_exclude_mechanism=excluded)
    smtp = transport(port, starttls=True, ssl_context=context, username="lookup", password=PASSWORD)
    with smtp:
        for _ in range(2):
            assert statuses(smtp.send(outgoing())) == {"someone@example.org": "accepted"}

    assert handler.mechanisms == [mechanism]  # once per connection, not per message
    assert [over_tls for _, _, over_tls in handler.envelopes] == [True, True]


def test_wrong_password_fails_fast_and_never_shows_the_password(
    tls_server, caplog: pytest.LogCaptureFixture
) -> None:
    handler, port, context = tls_server()
    smtp = transport(
        port, starttls=True, ssl_context=context, username="lookup", password="wrong-" + PASSWORD
    )
    with caplog.at_level(logging.DEBUG), smtp, pytest.raises(RetryableDeliveryError) as raised:
        smtp.send(outgoing())

    assert sorted(handler.mechanisms) == ["LOGIN", "PLAIN"]  # smtplib tries each once; no retry
    assert "535" in str(raised.value)
    error = raised.value
    texts = [str(error), repr(error), str(error.__cause__), repr(error.__cause__), caplog.text]
    texts.append(repr(smtp))
    assert not [text for text in texts if PASSWORD in text]


def test_untrusted_certificate_fails_fast(tls_server) -> None:
    _, port, _ = tls_server()
    smtp = transport(port, starttls=True, username="lookup", password=PASSWORD, backoff_seconds=5)
    started = time.monotonic()
    with smtp, pytest.raises(RetryableDeliveryError, match="SSLCertVerificationError"):
        smtp.send(outgoing())

    assert time.monotonic() - started < 2  # no backoff: retrying cannot fix the trust store


def test_starttls_required_but_not_offered_never_sends_in_clear(raw) -> None:
    server = raw(lambda *_: None)
    with transport(server.port, starttls=True) as smtp, pytest.raises(RetryableDeliveryError):
        smtp.send(outgoing())

    assert server.phases["MAIL"] == 0
    assert server.connections == 1


def test_repr_shows_where_but_not_the_password() -> None:
    smtp = SmtpTransport(host="smtp.example.org", port=587, username="u", password=PASSWORD)

    assert repr(smtp) == (
        "SmtpTransport(host='smtp.example.org', port=587, starttls=False, username='u')"
    )


def test_username_without_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NOTIFY_SMTP_USERNAME"):
        SmtpTransport(host="h", port=25, username="u")


def test_explicit_arguments() -> None:
    smtp = SmtpTransport(
        host="smtp.mailtrap.io",
        port=2525,
        timeout=7.5,
        starttls=True,
        username="user",
        password=PASSWORD,
    )

    assert (smtp.host, smtp.port, smtp.timeout, smtp.starttls, smtp.username) == (
        "smtp.mailtrap.io",
        2525,
        7.5,
        True,
        "user",
    )
    assert SmtpTransport(host="smtp.mailtrap.io", port=1).username is None
    assert smtp.reports_delivery is True


PIPELINING_EHLO = "250-raw.test\r\n250-SIZE 100000000\r\n250 PIPELINING"


def pipelining(*scripts: Callable[[str, int, int], str | None]):
    """A RawSMTP script offering PIPELINING (RFC 2920), then following `scripts` in turn."""

    def script(seen: str, conn: int, n: int) -> str | None:
        if seen == "EHLO":
            return PIPELINING_EHLO
        return next((r for s in scripts if (r := s(seen, conn, n)) is not None), None)

    return script


def test_a_pipelining_server_gets_mail_rcpt_and_data_in_one_write(raw) -> None:
    server = raw(pipelining(on("RCPT", "550 5.1.1 no such user", count=2)))
    with transport(server.port) as smtp:
        result = smtp.send(outgoing("a@example.org", "gone@example.org", "b@example.org"))

    assert statuses(result) == {"a@example.org": "accepted", "gone@example.org": "bounced",
                                "b@example.org": "accepted"}
    assert result.provider_message_id == "Q1"
    assert (server.phases["MAIL"], server.phases["RCPT"], server.phases["DATA"]) == (1, 3, 1)


def test_pipelined_data_for_no_recipient_is_ended_empty_and_nothing_is_sent(raw) -> None:
    """All of them refused for now, yet the server took DATA (354): the client must end it
    with a lone dot (RFC 2920 3.1), which is a message to no one."""
    server = raw(pipelining(on("RCPT", "450 4.2.1 try later")))
    with transport(server.port, max_attempts=2) as smtp, \
            pytest.raises(RecipientsDeferredError) as raised:
        smtp.send(outgoing())

    assert statuses(raised.value.result) == {"someone@example.org": "failed"}
    assert server.phases["DATA"] == 2 and server.bodies == [b"", b""]


def test_a_server_without_pipelining_gets_no_data_when_no_recipient_is_taken(raw) -> None:
    server = raw(on("RCPT", "450 4.2.1 try later"))
    with transport(server.port, max_attempts=2) as smtp, pytest.raises(RecipientsDeferredError):
        smtp.send(outgoing())

    assert server.phases["RCPT"] == 2 and server.phases["DATA"] == 0


def test_pipelined_connection_lost_at_rcpt_costs_an_attempt(raw) -> None:
    """Only a loss before MAIL FROM's reply is the idle connection's fault; later, the
    server has taken the transaction up."""
    server = raw(pipelining(on("RCPT", "421 4.3.2 shutting down", count=2)))
    with transport(server.port, max_attempts=1) as smtp:
        smtp.send(outgoing())
        with pytest.raises(RetryableDeliveryError, match="1 attempts"):
            smtp.send(outgoing())

    assert server.connections == 1
