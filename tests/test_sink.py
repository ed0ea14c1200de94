"""The local SMTP sink, driven over real sockets with the standard library's smtplib."""

from __future__ import annotations

import base64
import mailbox
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from notify_pipeline.sink import MaildirSink, run_sink

MESSAGE = (
    b"From: Lookup <lookup@notify.example.org>\r\n"
    b"To: someone@example.org\r\n"
    b"Subject: dots and spaces\r\n"
    b"\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"trailing spaces   \r\n"
    b"\r\n"
    b"caf\xc3\xa9\r\n"
)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def sink(maildir: Path):
    with MaildirSink(maildir, port=0, simulate=True) as running:
        yield running


def stored(maildir: Path) -> list[Path]:
    return sorted((maildir / "new").iterdir())


def submit(port: int, recipients: list[str], data: bytes = MESSAGE) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.ehlo()
        client.mail("lookup@notify.example.org")
        for recipient in recipients:
            client.rcpt(recipient)
        return client.data(data)


def test_port_zero_binds_a_free_loopback_port(maildir: Path) -> None:
    with MaildirSink(maildir, port=0) as one, MaildirSink(maildir, port=0) as two:
        assert one.host == two.host == "127.0.0.1"
        assert 0 not in (one.port, two.port)
        assert one.port != two.port


def test_stores_received_bytes_once_with_envelope_headers(sink: MaildirSink, maildir: Path) -> None:
    code, reply = submit(sink.port, ["a@example.org", "b@example.org"])

    (path,) = stored(maildir)
    assert (code, reply.decode()) == (250, f"OK queued as {path.name}")
    assert path.read_bytes() == (
        b"Return-Path: <lookup@notify.example.org>\r\n"
        b"X-Original-To: a@example.org,\r\n b@example.org\r\n" + MESSAGE
    )
    assert list((maildir / "tmp").iterdir()) == []


def test_stored_message_reads_back_through_mailbox(sink: MaildirSink, maildir: Path) -> None:
    _, reply = submit(sink.port, ["a@example.org"])
    key = reply.decode().rsplit(" ", 1)[1]

    message = mailbox.Maildir(maildir)[key]

    assert message["Subject"] == "dots and spaces"
    assert message["X-Original-To"] == "a@example.org"
    assert message["Return-Path"] == "<lookup@notify.example.org>"


def test_each_message_is_one_file(sink: MaildirSink, maildir: Path) -> None:
    keys = {submit(sink.port, ["a@example.org"])[1].decode().rsplit(" ", 1)[1] for _ in range(5)}

    assert {path.name for path in stored(maildir)} == keys
    assert len(keys) == 5


def test_file_and_folder_are_fsynced_before_the_reply(
    sink: MaildirSink, maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", spy)

    code, _ = submit(sink.port, ["a@example.org"])

    assert code == 250
    assert len(synced) == 2  # the message file, then new/


def test_storage_failure_is_a_temporary_refusal(sink: MaildirSink, maildir: Path) -> None:
    shutil.rmtree(maildir)

    code, reply = submit(sink.port, ["a@example.org"])

    assert (code, reply) == (451, b"4.3.0 local storage failed")


@pytest.mark.parametrize(
    ("recipient", "code", "reply"),
    [
        ("bounce@example.org", 550, b"5.1.1 mailbox unavailable"),
        ("Bounce.hard+x@example.org", 550, b"5.1.1 mailbox unavailable"),
        ("defer-me@example.org", 451, b"4.3.0 try again later"),
        ("complaint@example.org", 250, b"OK"),
        ("someone@bounce.example.org", 250, b"OK"),
    ],
)
def test_simulator_decides_by_local_part(
    sink: MaildirSink, recipient: str, code: int, reply: bytes
) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
        client.ehlo()
        client.mail("lookup@notify.example.org")
        assert client.rcpt(recipient) == (code, reply)


def test_simulator_is_off_by_default(maildir: Path) -> None:
    with MaildirSink(maildir, port=0) as plain:
        code, _ = submit(plain.port, ["bounce@example.org", "defer@example.org"])

    (path,) = stored(maildir)
    assert code == 250
    assert b"X-Original-To: bounce@example.org,\r\n defer@example.org\r\n" in path.read_bytes()


def test_stop_closes_the_port_and_restart_reuses_it(maildir: Path) -> None:
    sink = MaildirSink(maildir, port=0)
    sink.start()
    port = sink.port
    sink.stop()
    sink.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, timeout=5)

    with sink:
        assert sink.port == port
        assert submit(port, ["a@example.org"])[0] == 250


def test_start_twice_is_an_error(sink: MaildirSink) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        sink.start()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_sink_logs_one_line_and_stops_on_signal(maildir: Path, stop_signal: int) -> None:
    script = textwrap.dedent(
        f"""
        import logging, sys
        from pathlib import Path
        from notify_pipeline.sink import run_sink
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        run_sink(Path({str(maildir)!r}), port=0)
        print("stopped", flush=True)
        """
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("SMTP sink listening on 127.0.0.1:")
        port = int(line.split(":")[1].split(",")[0])
        assert submit(port, ["a@example.org"])[0] == 250

        process.send_signal(stop_signal)
        rest = process.communicate(timeout=10)[0]

    assert process.returncode == 0
    assert rest == "stopped\n"
    assert len(stored(maildir)) == 1


def test_run_sink_restores_signal_handlers(maildir: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_handled() -> None:
        while signal.getsignal(signal.SIGTERM) is before:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_handled, daemon=True).start()
    run_sink(maildir, port=0)

    assert signal.getsignal(signal.SIGTERM) is before


def test_stored_message_still_passes_dkim(sink: MaildirSink, maildir: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    signed = dkim.sign(MESSAGE, b"notify1", b"notify.example.org", private_pem) + MESSAGE

    submit(sink.port, ["a@example.org"], signed)

    (path,) = stored(maildir)
    assert dkim.verify(path.read_bytes(), dnsfunc=lambda name, timeout=5: record)
