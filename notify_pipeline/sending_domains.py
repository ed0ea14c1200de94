"""The deployment's sending domains and the DNS records they need, as `notify dns-records` prints
them and the `dns_records` asset stores them: one function, so both say the same."""

from __future__ import annotations

from collections.abc import Sequence

from notify_pipeline.dns import SES_SPF_INCLUDE, DnsRecord, dns_records
from notify_pipeline.domain_verification import (
    CachedDomainVerifier,
    DomainVerification,
    TxtLookup,
    verify_domain,
)
from notify_pipeline.keys import DkimKeys
from notify_pipeline.registry import Registry


def custom_domains(registry: Registry) -> list[str]:
    """Every service's custom domains, each once, in registry order."""
    return list(dict.fromkeys(d for s in registry.services for d in s.advanced.custom_domains))


def sending_domains(main: str, testing: str, registry: Registry) -> list[str]:
    """The main and testing domains, then every service's custom domains, each once."""
    domains = [main, testing]
    for service in registry.services:
        domains += [d for d in service.advanced.custom_domains if d not in domains]
    return domains


def deployment_dns_records(*, main: str, testing: str, registry: Registry, keys: DkimKeys,
                           via_ses: bool) -> list[dict[str, str]]:
    """SPF, DKIM and DMARC records for every sending domain (with the `home` key source, DKIM
    keys are made on first use); SPF names Amazon SES only when the deployment sends through it."""
    domains = sending_domains(main, testing, registry)
    records = dns_records(domains=domains, keys=keys.keys(domains),
                          spf_include=SES_SPF_INCLUDE if via_ses else None)
    return [r.as_dict() for r in records]


def domain_records(domain: str, keys: DkimKeys, *, via_ses: bool) -> list[DnsRecord]:
    """The SPF, DKIM and DMARC records one domain needs (its key read or, at home, made)."""
    return dns_records(domains=[domain], keys=[keys.key_for(domain)],
                       spf_include=SES_SPF_INCLUDE if via_ses else None)


def verify_custom_domains(domains: Sequence[str], keys: DkimKeys, *, via_ses: bool,
                          lookup: TxtLookup) -> list[DomainVerification]:
    """Each domain's records checked against DNS now, for `notify domains verify`."""
    return [verify_domain(d, domain_records(d, keys, via_ses=via_ses), lookup) for d in domains]


def custom_domain_verifier(keys: DkimKeys, *, via_ses: bool, lookup: TxtLookup,
                           ttl_seconds: float) -> CachedDomainVerifier:
    """What policy asks before mail leaves from a custom domain: the same check, cached."""
    return CachedDomainVerifier(lambda d: domain_records(d, keys, via_ses=via_ses), lookup,
                                ttl_seconds=ttl_seconds)
