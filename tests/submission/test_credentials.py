"""The credential store and `notify smtp-credentials`."""

from __future__ import annotations

import json
import stat
import threading

import pytest

from notify_pipeline.cli import main
from notify_pipeline.registry import load_registry
from notify_pipeline.submission.credentials import credential_store
from notify_pipeline.submission.errors import CredentialError, SubmissionReason


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_password_once_and_stores_only_a_hash(local, smtp_registry, capsys):
    code, out, err = run(capsys, "smtp-credentials", "create", "--service", "smtp-notices")
    assert code == 0
    created = json.loads(out)
    assert created["service"] == "smtp-notices"
    assert created["username"].startswith("smtp-notices.")
    assert len(created["password"]) >= 32
    assert "only this once" in err
    path = local.home / "smtp-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert created["password"] not in path.read_text()
    store = credential_store(local.home)
    assert store.verify(created["username"], created["password"]) == "smtp-notices"
    assert store.verify(created["username"], created["password"] + "x") is None
    assert store.verify("smtp-notices.ffffffff", created["password"]) is None


@pytest.mark.parametrize(("service", "reason"), [
    ("lookup-notices", "smtp_not_enabled"), ("nobody", "unknown_service")])
def test_create_is_refused_without_advanced_smtp(local, smtp_registry, capsys, service, reason):
    code, out, err = run(capsys, "smtp-credentials", "create", "--service", service)
    assert code == 2
    assert out == ""
    assert reason in err
    assert not (local.home / "smtp-credentials.json").exists()


def test_list_never_shows_a_hash(local, smtp_registry, capsys):
    run(capsys, "smtp-credentials", "create", "--service", "smtp-notices")
    run(capsys, "smtp-credentials", "create", "--service", "smtp-limited")
    code, out, _ = run(capsys, "smtp-credentials", "list")
    listed = json.loads(out)
    assert code == 0
    assert {c["service"] for c in listed} == {"smtp-notices", "smtp-limited"}
    assert all(set(c) == {"username", "service", "created"} for c in listed)
    _, out, _ = run(capsys, "smtp-credentials", "list", "--service", "smtp-limited")
    assert [c["service"] for c in json.loads(out)] == ["smtp-limited"]


def test_revoke_one_or_all_of_a_services_credentials(local, smtp_registry, capsys):
    names = [json.loads(run(capsys, "smtp-credentials", "create", "--service",
                            "smtp-notices")[1])["username"] for _ in range(3)]
    code, out, _ = run(capsys, "smtp-credentials", "revoke", "--service", "smtp-notices",
                       "--username", names[0])
    assert (code, json.loads(out)) == (0, {"revoked": [names[0]]})
    code, out, _ = run(capsys, "smtp-credentials", "revoke", "--service", "smtp-notices")
    assert sorted(json.loads(out)["revoked"]) == sorted(names[1:])
    code, _, err = run(capsys, "smtp-credentials", "revoke", "--service", "smtp-notices")
    assert code == 2
    assert "unknown_credential" in err


def test_revoke_needs_the_right_service(local, smtp_registry):
    store = credential_store(local.home)
    new = store.create(load_registry(smtp_registry), "smtp-notices")
    with pytest.raises(CredentialError) as caught:
        store.revoke("smtp-limited", new.username)
    assert caught.value.reason is SubmissionReason.UNKNOWN_CREDENTIAL
    assert store.verify(new.username, new.password) == "smtp-notices"


def test_the_password_is_not_in_the_repr(local, smtp_registry):
    new = credential_store(local.home).create(load_registry(smtp_registry), "smtp-notices")
    assert new.password not in repr(new)


def test_concurrent_creates_keep_every_credential(local, smtp_registry):
    registry = load_registry(smtp_registry)
    store = credential_store(local.home)
    created = []
    threads = [threading.Thread(target=lambda: created.append(
        store.create(registry, "smtp-notices"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {c.username for c in store.credentials()} == {c.username for c in created}
    assert len(created) == 6
