"""Custom domains: DNS verification through a real DNS server on 127.0.0.1, the From-domain
policy, and mail from a verified custom domain signed with that domain's own key (d=, s=)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dkim
import dns.resolver
import pytest

from notify_pipeline.cli import main
from notify_pipeline.dns import DnsRecord, dns_records
from notify_pipeline.domain_verification import (
    CachedDomainVerifier,
    DnsPythonLookup,
    DnsUnavailable,
    RecordState,
    verify_domain,
)
from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.keys import DkimKeys, HomeKeys
from notify_pipeline.policy import Domains, build_envelope
from notify_pipeline.registry import load_registry
from notify_pipeline.request import SendRequest, parse_request
from tests.emulators.dns import LocalDns
from tests.helpers import REGISTRY, request_bytes

CUSTOM = "mail.lookup.example.com"


@pytest.fixture
def keys(tmp_path: Path) -> DkimKeys:
    return DkimKeys(HomeKeys(tmp_path / "keys"), "notify1", {CUSTOM: "lk2026"})


def records(keys: DkimKeys, domain: str = CUSTOM) -> list[DnsRecord]:
    return dns_records(domains=[domain], keys=[keys.key_for(domain)], spf_include="amazonses.com")


def lookup(server: LocalDns) -> DnsPythonLookup:
    return DnsPythonLookup([server.nameserver], timeout=2)


def test_published_records_verify(dns_server: LocalDns, keys: DkimKeys) -> None:
    dns_server.zone.publish_all(records(keys))
    result = verify_domain(CUSTOM, records(keys), lookup(dns_server))
    assert result.verified, result.problems()
    assert [c.record.name for c in result.checks] == [
        CUSTOM, f"lk2026._domainkey.{CUSTOM}", f"_dmarc.{CUSTOM}"]


def test_missing_and_different_records_are_named(dns_server: LocalDns, keys: DkimKeys,
                                                 tmp_path: Path) -> None:
    other = DkimKeys(HomeKeys(tmp_path / "other"), "notify1", {CUSTOM: "lk2026"})
    spf, dkim_record, _dmarc = records(other)
    dns_server.zone.publish_all([spf, dkim_record])  # someone else's key, no DMARC
    dns_server.zone.publish(CUSTOM, "v=spf1 -all")  # and a second SPF record
    result = verify_domain(CUSTOM, records(keys), lookup(dns_server))
    assert not result.verified
    assert [c.state for c in result.checks] == [
        RecordState.DIFFERENT, RecordState.DIFFERENT, RecordState.MISSING]
    assert result.problems() == (f"SPF {CUSTOM} different, DKIM lk2026._domainkey.{CUSTOM}"
                                 f" different, DMARC _dmarc.{CUSTOM} missing")


def test_an_spf_record_without_our_provider_does_not_match(dns_server: LocalDns,
                                                           keys: DkimKeys) -> None:
    _spf, dkim_record, dmarc = records(keys)
    dns_server.zone.publish_all([dkim_record, dmarc])
    dns_server.zone.publish(CUSTOM, "v=spf1 include:_spf.example.net ~all")
    checks = verify_domain(CUSTOM, records(keys), lookup(dns_server)).checks
    assert checks[0].state is RecordState.DIFFERENT
    assert checks[0].found == ("v=spf1 include:_spf.example.net ~all",)


def test_dns_trouble_is_not_a_verdict(dns_server: LocalDns, keys: DkimKeys) -> None:
    dns_server.zone.fail(CUSTOM)
    with pytest.raises(DnsUnavailable, match=CUSTOM):
        verify_domain(CUSTOM, records(keys), lookup(dns_server))


def test_the_cache_rechecks_an_unverified_domain_sooner(dns_server: LocalDns,
                                                        keys: DkimKeys) -> None:
    now = [0.0]
    verifier = CachedDomainVerifier(lambda d: records(keys, d), lookup(dns_server),
                                    ttl_seconds=300, retry_seconds=30, clock=lambda: now[0])
    assert not verifier.verification(CUSTOM).verified
    dns_server.zone.publish_all(records(keys))
    now[0] = 10
    assert not verifier.verification(CUSTOM).verified  # the answer is kept for 30 s
    now[0] = 31
    assert verifier.verification(CUSTOM).verified
    dns_server.zone.remove(CUSTOM)
    now[0] = 300
    assert verifier.verification(CUSTOM).verified  # a verified answer is kept for 300 s


# The From-domain policy


class Verified:
    """A `CustomDomainCheck` answering from the local DNS server, uncached."""

    def __init__(self, server: LocalDns, keys: DkimKeys) -> None:
        self.server, self.keys = server, keys

    def verification(self, domain: str):  # type: ignore[no-untyped-def]
        return verify_domain(domain, records(self.keys, domain), lookup(self.server))


def custom_registry(tmp_path: Path) -> Path:
    folder = tmp_path / "registry"
    shutil.copytree(REGISTRY, folder)
    path = folder / "lookup-notices.yaml"
    text = path.read_text()
    assert "advanced:\n" in text
    path.write_text(text.replace("advanced:\n", f"advanced:\n  custom_domains: [{CUSTOM}]\n"))
    return folder


def envelope(tmp_path: Path, check: Verified | None, **fields: object):  # type: ignore[no-untyped-def]
    registry = load_registry(custom_registry(tmp_path))
    request = parse_request(request_bytes(**fields))
    domains = Domains("notify.example.org", "email-testing.notify.example.org", check)
    return build_envelope(request, registry[request.service], domains)


def test_a_listed_verified_custom_domain_is_the_from_domain(
        tmp_path: Path, dns_server: LocalDns, keys: DkimKeys) -> None:
    dns_server.zone.publish_all(records(keys))
    env = envelope(tmp_path, Verified(dns_server, keys), from_domain=CUSTOM)
    assert env.from_address == f"lookup@{CUSTOM}" and env.domain == CUSTOM


def test_without_from_domain_the_usual_domain_is_used(tmp_path: Path) -> None:
    assert envelope(tmp_path, None).from_address == "lookup@notify.example.org"


def test_a_domain_the_service_does_not_list_is_unauthorised(tmp_path: Path) -> None:
    with pytest.raises(RequestRejected) as caught:
        envelope(tmp_path, None, from_domain="other.example.com")
    assert caught.value.reason is RejectReason.UNAUTHORISED
    assert "not one of its advanced.custom_domains" in caught.value.message


def test_an_unverified_custom_domain_is_refused(tmp_path: Path, dns_server: LocalDns,
                                                keys: DkimKeys) -> None:
    with pytest.raises(RequestRejected) as caught:
        envelope(tmp_path, Verified(dns_server, keys), from_domain=CUSTOM)
    assert caught.value.reason is RejectReason.UNAUTHORISED
    assert f"custom domain {CUSTOM} is not verified (SPF {CUSTOM} missing" in caught.value.message


def test_from_domain_must_be_a_lower_case_dns_name() -> None:
    with pytest.raises(ValueError, match="from_domain"):
        SendRequest.model_validate_json(request_bytes(from_domain="Mail.Example.COM"))


# End to end: the local profile, a real DNS server, dkimpy verifying through it


def dnsfunc(server: LocalDns):  # type: ignore[no-untyped-def]
    """dkimpy's TXT lookup, through dnspython against the local server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.nameserver_ports = {"127.0.0.1": server.port}

    def lookup_txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(answer[0].strings)

    return lookup_txt


def test_custom_domain_mail_end_to_end(local, sink, capsys, monkeypatch: pytest.MonkeyPatch,
                                       dns_server: LocalDns, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_REGISTRY", str(custom_registry(tmp_path)))
    monkeypatch.setenv("NOTIFY_DNS_NAMESERVERS", json.dumps([dns_server.nameserver]))
    monkeypatch.setenv("NOTIFY_DKIM_SELECTORS", json.dumps({CUSTOM: "lk2026"}))
    monkeypatch.setenv("NOTIFY_DOMAIN_CHECK_SECONDS", "0.01")  # this process sees DNS change

    assert main(["domains", "verify"]) == 1  # nothing published yet
    report = json.loads(capsys.readouterr().out)
    assert report["domains"][0]["domain"] == CUSTOM
    assert report["domains"][0]["verified"] is False
    local.enqueue(local.request(id="early", from_domain=CUSTOM))
    assert main(["process"]) == 0
    assert json.loads(capsys.readouterr().out)["rejected"] == {"unauthorised": 1}

    assert main(["dns-records"]) == 0
    published = [DnsRecord(**r) for r in json.loads(capsys.readouterr().out)]
    assert f"lk2026._domainkey.{CUSTOM}" in [r.name for r in published]
    dns_server.zone.publish_all(published)
    assert main(["domains", "verify", CUSTOM]) == 0
    assert json.loads(capsys.readouterr().out)["domains"][0]["verified"] is True

    local.enqueue(local.request(id="later", from_domain=CUSTOM))
    local.enqueue(local.request(id="usual"))
    assert main(["process"]) == 0
    assert json.loads(capsys.readouterr().out)["delivered"] == 2
    signed = next(m for m in local.maildir() if f"lookup@{CUSTOM}".encode() in m)
    assert f"d={CUSTOM}".encode() in signed and b"s=lk2026" in signed
    assert dkim.verify(signed, dnsfunc=dnsfunc(dns_server))
    usual = next(m for m in local.maildir() if b"lookup@notify.example.org" in m)
    assert b"d=notify.example.org" in usual


def test_domains_verify_names_an_unknown_domain(local, capsys, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_REGISTRY", str(custom_registry(tmp_path)))
    assert main(["domains", "verify", "nope.example.org"]) == 2
    assert f"(custom domains: {CUSTOM})" in capsys.readouterr().err
