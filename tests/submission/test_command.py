"""`notify smtp-server`, run as users run it: a process, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage

from notify_pipeline.cli import main
from notify_pipeline.registry import load_registry
from notify_pipeline.request import parse_request
from notify_pipeline.submission.credentials import credential_store
from tests.conftest import free_port


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_smtp_server_command_accepts_mail_and_stops_on_sigterm(local, smtp_registry):
    new = credential_store(local.home).create(load_registry(smtp_registry), "smtp-notices")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_pipeline.cli", "smtp-server", "--port", str(port)],
        env={**os.environ, **local.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_for_port(port, proc)
        cert = local.settings.keys_dir / "smtp-tls-cert.pem"  # the self-signed default
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.starttls(context=ssl.create_default_context(cafile=cert))
            client.login(new.username, new.password)
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = (
                "smtp-notices@notify.example.org", "alice@example.org", "From the command")
            msg.set_content("Hello")
            client.send_message(msg)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out
    [path] = local.settings.inbox_dir.glob("*.json")
    assert parse_request(path.read_bytes()).subject == "From the command"


def test_a_certificate_needs_its_key(local, smtp_registry, tmp_path, capsys):
    code = main(["smtp-server", "--port", "0", "--tls-cert", str(tmp_path / "cert.pem")])
    assert code == 2
    assert "--tls-cert/--tls-key" in capsys.readouterr().err


def test_the_server_runs_only_in_the_local_profile_for_now(local, smtp_registry, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("NOTIFY_PROFILE", "gcp")
    assert main(["smtp-server", "--port", "0"]) == 2
    err = capsys.readouterr().err
    # An unconfigured gcp profile is refused before the command runs; a configured one by it.
    assert "NOTIFY_GCP_PROJECT: is not set" in err or "NOTIFY_PROFILE" in err
