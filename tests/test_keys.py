"""DKIM key sources (`NOTIFY_DKIM_KEY_SOURCE`): the home folder, mounted files, Secret Manager.

The Secret Manager source is tested through an in-memory `SecretReader` (our own interface);
the Google client behind `GoogleSecretReader` has no emulator and is not exercised here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from notify_pipeline.cli import main
from notify_pipeline.configuration import load_settings
from notify_pipeline.errors import ConfigError, ConfigErrors
from notify_pipeline.keys import (
    DkimKeys,
    FileKeys,
    HomeKeys,
    KeyMissing,
    KeySourceKind,
    KeySourceSpec,
    SecretManagerKeys,
    dkim_keys,
    key_source_problems,
    parse_key_source,
    secret_id,
    secret_version_name,
)
from notify_pipeline.signing import DkimSigner, SigningError

DOMAIN = "notify.example.org"
SELECTOR = "notify1"


def new_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


@pytest.fixture(scope="module")
def pem() -> bytes:
    return new_pem()


def pem_body(pem: bytes) -> str:
    """A line from the middle of the PEM: what a leak of the key would contain."""
    return pem.decode().splitlines()[5]


class MemorySecrets:
    """An in-memory `SecretReader`: resource name to bytes."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets
        self.asked: list[str] = []

    def read(self, name: str) -> bytes | None:
        self.asked.append(name)
        return self.secrets.get(name)


@pytest.mark.parametrize(("value", "spec"), [
    ("home", KeySourceSpec(KeySourceKind.HOME)),
    ("files:/run/secrets/dkim", KeySourceSpec(KeySourceKind.FILES, "/run/secrets/dkim")),
    ("secret-manager:notify-prod-1", KeySourceSpec(KeySourceKind.SECRET_MANAGER, "notify-prod-1")),
])
def test_key_source_values_parse(value: str, spec: KeySourceSpec) -> None:
    assert parse_key_source(value) == spec
    assert str(spec) == value


@pytest.mark.parametrize(("value", "says"), [
    ("vault:x", "'vault:x' is not a key source"),
    ("files:", "'files:' is not a key source"),
    ("home:/x", "'home:/x' is not a key source"),
    ("secret-manager:Bad_Project", "'Bad_Project' is not a Google Cloud project id"),
])
def test_bad_key_source_values_say_what_is_allowed(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_key_source(value)
    message = str(caught.value)
    assert message.startswith("NOTIFY_DKIM_KEY_SOURCE: ")
    assert says in message
    assert "allowed: home, files:<folder of PEM files>, secret-manager:<project id>" in message


def test_key_source_problems_cover_folder_and_selectors(tmp_path: Path) -> None:
    problems = [str(p) for p in key_source_problems(
        f"files:{tmp_path / 'absent'}", {"Mail.Example": "s1", "mail.example.com": "a_b"},
        "notify1")]
    assert problems[0] == (f"NOTIFY_DKIM_KEY_SOURCE: {tmp_path / 'absent'} is not a folder;"
                           " allowed: home, files:<folder of PEM files>,"
                           " secret-manager:<project id>")
    assert any("NOTIFY_DKIM_SELECTORS: 'Mail.Example' is not a lower-case DNS name" in p
               for p in problems)
    assert any("NOTIFY_DKIM_SELECTORS: 'a_b' is not one DNS label" in p for p in problems)
    assert key_source_problems(f"files:{tmp_path}", {"mail.example.com": "s2"}, "notify1") == []


def test_settings_report_a_bad_key_source(local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_DKIM_KEY_SOURCE", "vault")
    with pytest.raises(ConfigErrors) as caught:
        load_settings()
    assert [p.setting for p in caught.value.problems] == ["NOTIFY_DKIM_KEY_SOURCE"]


def test_file_keys_read_one_pem_per_domain_and_selector(tmp_path: Path, pem: bytes) -> None:
    (tmp_path / f"{DOMAIN}.{SELECTOR}.pem").write_bytes(pem)
    key = FileKeys(tmp_path).key("Notify.Example.Org", SELECTOR)
    assert (key.domain, key.selector, key.private_key_pem) == (DOMAIN, SELECTOR, pem)


def test_file_keys_never_generate_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing) as caught:
        FileKeys(tmp_path).key(DOMAIN, SELECTOR)
    assert (caught.value.domain, caught.value.selector) == (DOMAIN, SELECTOR)
    assert str(caught.value) == (f"no DKIM key for {DOMAIN} (selector {SELECTOR}):"
                                 f" {tmp_path / f'{DOMAIN}.{SELECTOR}.pem'} does not exist")
    assert list(tmp_path.iterdir()) == []


def test_file_keys_refuse_a_path_like_domain(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="not a valid sending domain"):
        FileKeys(tmp_path).key("../etc", SELECTOR)


def test_an_unusable_key_file_is_named_but_not_quoted(tmp_path: Path, pem: bytes) -> None:
    broken = pem[:200] + b"garbage" + pem[260:]
    (tmp_path / f"{DOMAIN}.{SELECTOR}.pem").write_bytes(broken)
    with pytest.raises(SigningError) as caught:
        FileKeys(tmp_path).key(DOMAIN, SELECTOR)
    assert f"{DOMAIN}.{SELECTOR}.pem is not a readable PEM private key" in str(caught.value)
    assert pem_body(pem) not in str(caught.value) and caught.value.__cause__ is None


def test_secret_ids_map_domain_and_selector_one_to_one() -> None:
    assert secret_id("Notify.Example.Org.", "notify1") == "dkim_notify1_notify_example_org"
    assert secret_id("mail-1.example.org", "s-2") == "dkim_s-2_mail-1_example_org"
    assert secret_id("a.b-c.org", "x") != secret_id("a-b.c.org", "x")
    assert secret_version_name("p-12345", DOMAIN, SELECTOR) == (
        "projects/p-12345/secrets/dkim_notify1_notify_example_org/versions/latest")


def test_secret_ids_longer_than_allowed_are_refused() -> None:
    long_domain = ".".join(["a" * 63] * 3) + ".org"
    with pytest.raises(SigningError, match="over 255 characters"):
        secret_id(long_domain, "s" * 63)


def test_secret_manager_keys_read_the_latest_version(pem: bytes) -> None:
    name = secret_version_name("notify-prod-1", DOMAIN, SELECTOR)
    secrets = MemorySecrets({name: pem})
    key = SecretManagerKeys("notify-prod-1", secrets).key(DOMAIN, SELECTOR)
    assert key.private_key_pem == pem and secrets.asked == [name]


def test_secret_manager_keys_never_generate_a_missing_key() -> None:
    secrets = MemorySecrets({})
    with pytest.raises(KeyMissing) as caught:
        SecretManagerKeys("notify-prod-1", secrets).key(DOMAIN, SELECTOR)
    name = secret_version_name("notify-prod-1", DOMAIN, SELECTOR)
    assert str(caught.value) == (
        f"no DKIM key for {DOMAIN} (selector {SELECTOR}): secret {name} does not exist")
    assert secrets.secrets == {}


def test_home_keys_are_generated_once(tmp_path: Path) -> None:
    first = HomeKeys(tmp_path).key(DOMAIN, SELECTOR)
    assert HomeKeys(tmp_path).key(DOMAIN, SELECTOR) == first
    assert (tmp_path / "dkim" / f"{DOMAIN}.{SELECTOR}.pem").is_file()


def test_each_domain_signs_with_its_own_selector(tmp_path: Path) -> None:
    keys = DkimKeys(HomeKeys(tmp_path), "notify1", {"mail.example.com": "s2026"})
    assert keys.key_for("Mail.Example.Com").selector == "s2026"
    assert keys.key_for(DOMAIN).selector == "notify1"
    assert sorted(p.name for p in (tmp_path / "dkim").iterdir()) == [
        "mail.example.com.s2026.pem", f"{DOMAIN}.notify1.pem"]


def test_keys_stay_out_of_reprs_and_logs(tmp_path: Path, pem: bytes,
                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / f"{DOMAIN}.{SELECTOR}.pem").write_bytes(pem)
    caplog.set_level(logging.DEBUG)
    keys = dkim_keys(key_source=f"files:{tmp_path}", keys_dir=tmp_path / "home",
                     selector=SELECTOR)
    key = keys.key_for(DOMAIN)
    signer = DkimSigner(key)
    signer.sign(f"From: a@{DOMAIN}\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n".encode())
    secret = SecretManagerKeys("notify-prod-1", MemorySecrets(
        {secret_version_name("notify-prod-1", DOMAIN, SELECTOR): pem}))
    shown = [repr(key), str(key), repr(keys), repr(signer), repr(secret),
             repr(secret.key(DOMAIN, SELECTOR)), caplog.text]
    for text in shown:
        assert pem_body(pem) not in text and "PRIVATE KEY" not in text


def test_dns_records_from_mounted_files_with_per_domain_selectors(
        local, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pem: bytes) -> None:
    s = local.settings
    folder = tmp_path / "mounted"
    folder.mkdir()
    (folder / f"{s.domain}.{s.dkim_selector}.pem").write_bytes(pem)
    (folder / f"{s.testing_domain}.t1.pem").write_bytes(new_pem())
    monkeypatch.setenv("NOTIFY_DKIM_KEY_SOURCE", f"files:{folder}")
    monkeypatch.setenv("NOTIFY_DKIM_SELECTORS", json.dumps({s.testing_domain: "t1"}))
    assert main(["dns-records"]) == 0
    out, err = capsys.readouterr()
    names = [r["name"] for r in json.loads(out)]
    assert f"{s.dkim_selector}._domainkey.{s.domain}" in names
    assert f"t1._domainkey.{s.testing_domain}" in names
    assert pem_body(pem) not in out + err
    assert not (s.keys_dir / "dkim").exists()  # nothing generated under the home


def test_dns_records_name_a_missing_mounted_key(local, capsys, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_DKIM_KEY_SOURCE", f"files:{tmp_path}")
    assert main(["dns-records"]) == 2
    err = capsys.readouterr().err
    assert f"no DKIM key for {local.settings.domain} (selector notify1)" in err
    assert list(tmp_path.iterdir()) == []
