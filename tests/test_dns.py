"""DNS records for sending domains, and the in-memory TXT resolver dkimpy verifies against."""

from __future__ import annotations

import base64
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from notify_pipeline.dns import DnsRecord, dns_records, txt_resolver
from notify_pipeline.signing import DkimKey, DkimKeyStore

MAIN = "notify.example.org"
TESTING = "email-testing.notify.example.org"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[DkimKey]:
    return DkimKeyStore(tmp_path_factory.mktemp("keys"), "notify1").keys([MAIN, TESTING])


def by_name(records: list[DnsRecord]) -> dict[str, DnsRecord]:
    return {record.name: record for record in records}


def test_three_txt_records_per_domain_in_order(keys: list[DkimKey]) -> None:
    records = dns_records(domains=[MAIN, TESTING], keys=keys)
    assert [(r.name, r.type) for r in records] == [
        (MAIN, "TXT"),
        (f"notify1._domainkey.{MAIN}", "TXT"),
        (f"_dmarc.{MAIN}", "TXT"),
        (TESTING, "TXT"),
        (f"notify1._domainkey.{TESTING}", "TXT"),
        (f"_dmarc.{TESTING}", "TXT"),
    ]


def test_spf_and_dmarc_values(keys: list[DkimKey]) -> None:
    records = by_name(dns_records(domains=[MAIN], keys=keys, spf_include="_spf.example.net"))
    assert records[MAIN].value == "v=spf1 include:_spf.example.net ~all"
    assert records[f"_dmarc.{MAIN}"].value == "v=DMARC1; p=quarantine; adkim=s; aspf=r"


@pytest.mark.parametrize("rua", ["dmarc@example.org", "mailto:dmarc@example.org"])
def test_dmarc_reports_address(keys: list[DkimKey], rua: str) -> None:
    records = by_name(dns_records(domains=[MAIN], keys=keys, dmarc_policy="reject", dmarc_rua=rua))
    assert records[f"_dmarc.{MAIN}"].value == (
        "v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:dmarc@example.org"
    )


def test_dkim_record_holds_the_signing_keys_public_half(keys: list[DkimKey]) -> None:
    for key in keys:
        value = by_name(dns_records(domains=[key.domain], keys=keys))[
            f"notify1._domainkey.{key.domain}"
        ].value
        match = re.fullmatch(r"v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)", value)
        assert match is not None
        published = serialization.load_der_public_key(base64.b64decode(match[1]))
        private = serialization.load_pem_private_key(key.private_key_pem, password=None)
        assert isinstance(published, rsa.RSAPublicKey)
        assert isinstance(private, rsa.RSAPrivateKey)
        assert published.public_numbers() == private.public_key().public_numbers()


def test_domains_are_case_blind_and_deduplicated(keys: list[DkimKey]) -> None:
    records = dns_records(domains=["Notify.Example.ORG", MAIN], keys=keys)
    assert [r.name for r in records] == [MAIN, f"notify1._domainkey.{MAIN}", f"_dmarc.{MAIN}"]


def test_a_domain_without_a_key_is_an_error(keys: list[DkimKey]) -> None:
    with pytest.raises(ValueError, match=r"no DKIM key for sending domain other\.example\.org"):
        dns_records(domains=["other.example.org"], keys=keys)


def test_unknown_dmarc_policy_is_an_error(keys: list[DkimKey]) -> None:
    with pytest.raises(ValueError, match="dmarc_policy"):
        dns_records(domains=[MAIN], keys=keys, dmarc_policy="quarantine-ish")


def test_as_dict() -> None:
    record = DnsRecord("_dmarc.x.org", "TXT", "v=DMARC1; p=none")
    assert record.as_dict() == {"name": "_dmarc.x.org", "type": "TXT", "value": "v=DMARC1; p=none"}


def test_resolver_answers_as_dkimpy_asks(keys: list[DkimKey]) -> None:
    records = dns_records(domains=[MAIN], keys=keys)
    resolve = txt_resolver(records)
    dkim_value = by_name(records)[f"notify1._domainkey.{MAIN}"].value
    assert len(dkim_value) > 255  # longer than one TXT string: returned joined
    assert resolve(f"notify1._domainkey.{MAIN}.".encode(), timeout=5) == dkim_value.encode()
    assert resolve(f"NOTIFY1._domainkey.{MAIN}".upper().encode()) == dkim_value.encode()
    assert resolve(f"_dmarc.{MAIN}.".encode()) == b"v=DMARC1; p=quarantine; adkim=s; aspf=r"
    assert resolve(b"missing.example.org.") is None
    assert resolve("\u00e9.example.org.".encode()) is None


def test_resolver_accepts_a_mapping_and_ignores_other_types() -> None:
    assert txt_resolver({"A.example.org.": "v=spf1 -all"})(b"a.example.org.") == b"v=spf1 -all"
    resolve = txt_resolver([DnsRecord("x.org", "CNAME", "y.org"), DnsRecord("x.org", "TXT", "t")])
    assert resolve(b"x.org.") == b"t"


def test_dkimpy_finds_the_key_through_the_resolver(keys: list[DkimKey]) -> None:
    resolve = txt_resolver(dns_records(domains=[MAIN], keys=keys))
    public_key, bits, key_type, _ = dkim.load_pk_from_dns(
        f"notify1._domainkey.{MAIN}.".encode(), resolve
    )
    assert (bits, key_type) == (2048, b"rsa")
    assert public_key["publicExponent"] == 65537


def test_spf_lists_no_provider_when_there_is_none_to_name(keys: list[DkimKey]) -> None:
    records = by_name(dns_records(domains=[MAIN], keys=keys, spf_include=None))
    assert records[MAIN].value == "v=spf1 ~all"
