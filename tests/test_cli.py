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


# A gcp profile configured enough to start (its emulator addresses are never contacted here).
GCP_ENV = {"NOTIFY_PROFILE": "gcp", "NOTIFY_GCP_PROJECT": "p", "NOTIFY_GCS_BUCKET": "b",
           "NOTIFY_LEDGER_DSN": "postgresql://u@127.0.0.1:1/db",
           "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1",
           "NOTIFY_BIGQUERY_ENDPOINT": "http://127.0.0.1:1"}


def test_token_is_refused_outside_the_local_profile(local, capsys, monkeypatch):
    for key, value in GCP_ENV.items():
        monkeypatch.setenv(key, value)
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


def notify(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `notify` command as a user would, in a clean environment."""
    command = Path(sys.executable).with_name("notify")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("NOTIFY_", "GOOGLE_", "DAGSTER_"))}
    return subprocess.run([str(command), *argv], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["registry", "validate"], ["dns-records"], ["process"],
                                  ["token", "--service-account", PROD_ACCOUNT]])
def test_every_configuration_problem_is_one_sentence_exit_2(local, argv):
    env = {**local.env, "NOTIFY_PROFILE": "GCP", "NOTIFY_BATCH_MAX_SIZE": "abc",
           "NOTIFY_SMTP_PORT": "-"}
    result = notify(env, *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert ("NOTIFY_PROFILE: 'GCP' is not allowed; allowed: one of local, gcp (default local)"
            in lines)
    assert ("NOTIFY_BATCH_MAX_SIZE: 'abc' is not allowed; allowed: a whole number, at least 1"
            " (default 2000)") in lines
    assert any(line.startswith("NOTIFY_SMTP_PORT: '-' is not allowed") for line in lines)


def test_an_unconfigured_gcp_profile_lists_everything_it_needs(local, tmp_path):
    env = {**local.env, "NOTIFY_PROFILE": "gcp", "HOME": str(tmp_path),
           "NOTIFY_INBOX": "pubsub"}
    result = notify(env, "process")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    named = {line.split(":")[0] for line in result.stderr.splitlines()[1:]}
    assert named == {"NOTIFY_GCP_PROJECT", "NOTIFY_LEDGER_DSN", "NOTIFY_GCS_BUCKET",
                     "NOTIFY_PUBSUB_SUBSCRIPTION", "GOOGLE_APPLICATION_CREDENTIALS"}
    assert "DefaultCredentialsError" not in result.stderr


def test_a_missing_key_file_is_named(local, tmp_path):
    env = {**local.env, **GCP_ENV, "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")}
    result = notify(env, "dns-records")
    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        f"GOOGLE_APPLICATION_CREDENTIALS: {tmp_path / 'nope.json'} is not a file; allowed: the"
        " path of a service-account key file"]


def test_a_home_under_a_missing_folder_is_refused_and_nothing_is_created(local, tmp_path):
    home = tmp_path / "typo" / "home"
    result = notify({**local.env, "NOTIFY_HOME": str(home)}, "token", "--service-account",
                    PROD_ACCOUNT)
    assert result.returncode == 2
    assert result.stderr.splitlines()[1].startswith(f"NOTIFY_HOME: {home}: its parent folder")
    assert not (tmp_path / "typo").exists()


def test_a_new_home_in_an_existing_folder_is_created(local):
    result = notify(local.env, "token", "--service-account", PROD_ACCOUNT)
    assert result.returncode == 0, result.stderr
    assert local.settings.keys_dir.is_dir()


def test_dagster_refuses_to_load_a_misconfigured_deployment(local, monkeypatch):
    from notify_pipeline.definitions import defs
    from notify_pipeline.errors import ConfigErrors

    monkeypatch.setenv("NOTIFY_BATCH_MAX_AGE_SECONDS", "soon")
    with pytest.raises(ConfigErrors) as info:
        defs()
    assert str(info.value) == ("NOTIFY_BATCH_MAX_AGE_SECONDS: 'soon' is not allowed; allowed: a"
                               " number, at least 0 (default 1.0)")


def _subcommands(parser=None, prefix=()):
    """Every leaf subcommand of the parser, as argv prefixes."""
    import argparse

    from notify_pipeline.cli import _parser

    parser = parser or _parser()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _subcommands(child, (*prefix, name)) or [(*prefix, name)]
    return found


@pytest.mark.parametrize("argv", _subcommands())
def test_every_subcommand_and_flag_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    flags = [line.split()[0] for line in out.splitlines() if line.startswith("  -")]
    assert flags, out
    for line in out.split("\n  -")[1:]:
        assert len(line.split()) > 2, f"{argv}: a flag without help: -{line}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    assert "Dagster UI port (default: 3000)" in capsys.readouterr().out


def test_an_unknown_service_names_the_registered_ones_and_the_closest(local, capsys):
    code, out, err = run(capsys, "enqueue", "--service", "lookup-notice", "--to",
                         "alice@example.org", "--subject", "Hi", "--text", "x")
    assert code == 2
    assert out == ""
    assert "did you mean 'lookup-notices' or 'lookup-notices-test'?" in err
    assert "(registered: hr-reminders, lookup-notices, lookup-notices-test, notify-alerts)" in err
    assert not list(local.settings.inbox_dir.glob("*.json"))


def test_readme_bad_request_example_works_as_written(local, sink):
    readme = (REPO / "README.md").read_text()
    block = readme.split("Try a bad request", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    results = [notify(local.env, *line.split()[1:]) for line in block.splitlines()]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert json.loads(results[-1].stdout)["rejected"] == {"unknown_service": 1}
    assert "unknown_service: no service 'nobody' is registered" in results[-1].stderr
    assert len(list((local.home / "rejected").glob("*.reason"))) == 1


def test_process_is_quiet_unless_verbose(local, sink):
    local.enqueue(local.request())
    quiet = notify(local.env, "process")
    assert quiet.returncode == 0
    assert json.loads(quiet.stdout)["delivered"] == 1
    assert "DEBUG" not in quiet.stderr and "Warning" not in quiet.stderr
    local.enqueue(local.request())
    loud = notify(local.env, "process", "--verbose")
    assert loud.returncode == 0
    assert "DEBUG - deliver_batch" in loud.stderr


def test_local_spf_records_name_no_ses(local, capsys):
    code, out, _ = run(capsys, "dns-records")
    assert code == 0
    spf = [r["value"] for r in json.loads(out) if r["value"].startswith("v=spf1")]
    assert spf == ["v=spf1 ~all", "v=spf1 ~all"], "local mail goes through SMTP, not SES"


def test_the_generated_dagster_yaml_turns_telemetry_and_the_newsletter_dialog_off(tmp_path):
    import dagster as dg

    from notify_pipeline.up import DAGSTER_YAML

    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.telemetry_enabled is False
        assert instance.nux_enabled is False
    finally:
        instance.dispose()


def _deferred_batch(local) -> str:
    """A staged batch handed back with an hour's retry delay, as after a provider outage."""
    from notify_pipeline.inbox.local import LocalInbox
    from notify_pipeline.ledger.base import current_owner
    from notify_pipeline.ledger.sqlite import SqliteLedger

    local.enqueue(local.request(id="later"))
    inbox = LocalInbox(local.home)
    inbox.stage(max_items=10, max_age_seconds=0, now=utcnow())
    batch = inbox.batches()[0]
    ledger = SqliteLedger(local.settings.ledger_path)
    owner = current_owner("earlier-run")
    ledger.acquire_batch(batch, owner=owner, lease_seconds=60, now=utcnow())
    ledger.release_batch(batch, owner=owner, retry_after_seconds=3600, now=utcnow())
    assert not ledger.batch_status(batch, now=utcnow()).ready
    ledger.close()
    return batch


def test_retry_makes_a_deferred_batch_ready_now(local, sink, capsys):
    batch = _deferred_batch(local)
    code, out, _ = run(capsys, "process")
    assert json.loads(out)["delivered"] == 0, "the batch waits out its delay"
    code, out, _ = run(capsys, "retry")
    assert code == 0
    assert out == f"{batch}: ready now (attempt 3 is next)\n"
    code, out, _ = run(capsys, "process")
    assert json.loads(out)["delivered"] == 1
    code, out, _ = run(capsys, "retry")
    assert out == "no staged batches\n"


def test_retry_of_an_unknown_batch_exits_1(local, capsys):
    code, out, _ = run(capsys, "retry", "no-such-batch")
    assert code == 1
    assert out == "no-such-batch: no such staged batch\n"


def test_suppression_list_and_remove(local, sink, capsys):
    from datetime import timedelta

    from notify_pipeline.ledger.base import Suppression
    from notify_pipeline.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(local.settings.ledger_path)
    ledger.add_suppressions([Suppression("alice@example.org", "bounce", "ev-1",
                                         utcnow() + timedelta(days=90))])
    ledger.close()
    local.enqueue(local.request(id="s1"))
    code, out, _ = run(capsys, "process")
    assert json.loads(out)["rejected"] == {"suppressed": 1}
    code, out, _ = run(capsys, "suppression", "list")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(s["recipient"], s["reason"], s["event_id"]) for s in listed] == [
        ("alice@example.org", "bounce", "ev-1")]
    assert code == 0 and listed[0]["until"] > utcnow().isoformat()
    code, out, _ = run(capsys, "suppression", "remove", "Alice@Example.org")
    assert (code, out) == (0, "Alice@Example.org: suppression lifted\n")
    code, out, _ = run(capsys, "suppression", "remove", "alice@example.org")
    assert (code, out) == (1, "alice@example.org: was not suppressed\n")
    assert run(capsys, "suppression", "list")[1] == ""
    local.enqueue(local.request(id="s2"))
    assert json.loads(run(capsys, "process")[1])["delivered"] == 1


def test_limits_shows_each_services_use_of_the_default_daily_limit(local, sink, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("NOTIFY_LIMIT_PER_DAY", "2")
    for n in range(3):
        local.enqueue(local.request(id=f"m{n}"))
    code, out, _ = run(capsys, "process")
    summary = json.loads(out)
    assert (summary["delivered"], summary["deferred"], summary["deferred_by"]) == (
        2, 1, {"per_day": 1})

    code, out, _ = run(capsys, "limits")
    assert code == 0
    rows = {row["scope"]: row for row in json.loads(out)["limits"]}
    assert (rows["service:lookup-notices"]["used"], rows["service:lookup-notices"]["cap"]) == (2, 2)
    assert rows["service:hr-reminders"]["used"] == 0
    assert {row["limit"] for row in rows.values()} == {"per_day"}
