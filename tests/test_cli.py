"""The `notify` command line, called as users call it."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notify_pipeline.cli import main
from notify_pipeline.dns import verify
from notify_pipeline.events import utcnow
from notify_pipeline.identity import FileCertSource, TokenVerifier
from notify_pipeline.request import parse_request
from notify_pipeline.signing import DkimKeyStore, DkimSigner
from tests.conftest import free_port
from tests.helpers import PROD_ACCOUNT, REPO


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_registry_validate_accepts_the_shipped_registry(local, capsys):
    code, out, _ = run(capsys, "registry", "validate")
    assert code == 0
    assert "valid" in out


def test_registry_validate_lists_every_error_and_exits_1(tmp_path, capsys):
    (tmp_path / "one.yaml").write_text("id: one\ndisplay_name: One\n")
    (tmp_path / "two.yaml").write_text("id: Two!\n")
    code, _, err = run(capsys, "registry", "validate", str(tmp_path))
    assert code == 1
    assert "one.yaml: local_part" in err
    assert "one.yaml: technical_contacts" in err
    assert "two.yaml: id" in err


def test_registry_schema_matches_the_checked_in_file(capsys):
    code, out, _ = run(capsys, "registry", "schema")
    assert code == 0
    assert out == (REPO / "registry" / "schema.json").read_text()


def test_token_prints_a_token_the_pipeline_accepts(local, capsys):
    code, out, _ = run(capsys, "token", "--service-account", PROD_ACCOUNT, "--ttl", "60")
    assert code == 0
    s = local.settings
    verifier = TokenVerifier(certs=FileCertSource(local.issuer.certs_path),
                             audience=s.deployment_audience, issuers=frozenset({s.local_issuer}))
    assert verifier.verify(out.strip(), received_at=utcnow()).email == PROD_ACCOUNT


def test_token_is_refused_outside_the_local_profile(local, capsys, monkeypatch):
    monkeypatch.setenv("NOTIFY_PROFILE", "gcp")
    code, _, err = run(capsys, "token", "--service-account", PROD_ACCOUNT)
    assert code == 2
    assert "NOTIFY_PROFILE" in err


def test_dns_records_match_the_signing_keys(local, capsys):
    code, out, _ = run(capsys, "dns-records")
    assert code == 0
    records = json.loads(out)
    s = local.settings
    for domain in (s.domain, s.testing_domain):
        names = {(r["name"], r["type"]) for r in records}
        assert (domain, "TXT") in names
        assert (f"_dmarc.{domain}", "TXT") in names
        assert (f"{s.dkim_selector}._domainkey.{domain}", "TXT") in names
    from notify_pipeline.dns import DnsRecord

    key = DkimKeyStore(s.keys_dir, s.dkim_selector).key_for(s.domain)
    message = (f"From: a@{s.domain}\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n").encode()
    signed = DkimSigner(key).sign(message)
    assert verify(signed, [DnsRecord(**r) for r in records])


def test_enqueue_writes_a_valid_request_with_a_minted_token(local, capsys):
    code, out, _ = run(capsys, "enqueue", "--service", "lookup-notices", "--to",
                       "alice@example.org", "--subject", "Hi", "--text", "Hello", "--id", "k1")
    assert code == 0
    path = json.loads(out)["path"]
    request = parse_request(Path(path).read_bytes())
    assert (request.id, request.service, request.to) == ("k1", "lookup-notices",
                                                          ("alice@example.org",))
    assert request.identity_token.count(".") == 2


def test_enqueue_then_process_prints_the_summary(local, sink, capsys):
    run(capsys, "enqueue", "--service", "lookup-notices", "--to", "alice@example.org",
        "--subject", "Hi", "--html", "<b>Hello</b>", "--service-account", PROD_ACCOUNT)
    run(capsys, "enqueue", "--service", "nobody", "--to", "alice@example.org",
        "--subject", "Hi", "--text", "x", "--token", "forged")
    code, out, _ = run(capsys, "process")
    summary = json.loads(out)
    assert code == 0
    assert summary["delivered"] == 1
    assert summary["rejected"] == {"unknown_service": 1}
    assert {"failed", "duplicates", "events"} <= summary.keys()
    assert len(local.maildir()) == 1


def test_sink_command_stores_mail_and_stops_on_sigterm(local):
    port = free_port()
    env = {**os.environ, **local.env}
    proc = subprocess.Popen([sys.executable, "-m", "notify_pipeline.cli", "sink", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                    smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: s\r\n\r\nhi\r\n")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert len(local.maildir()) == 1


@pytest.mark.parametrize("argv", [["enqueue", "--service", "x"], ["registry"]])
def test_usage_errors_exit_non_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_process_runs_the_local_sink_itself_when_none_is_running(local, capsys):
    run(capsys, "enqueue", "--service", "lookup-notices", "--to", "alice@example.org",
        "--subject", "Hi", "--text", "Hello")
    code, out, err = run(capsys, "process")
    assert code == 0
    assert json.loads(out)["delivered"] == 1
    assert "running the local sink for this pass" in err
    assert len(local.maildir()) == 1
