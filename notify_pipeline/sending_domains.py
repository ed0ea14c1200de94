"""The deployment's sending domains and the DNS records they need, as `notify dns-records` prints
them and the `dns_records` asset stores them: one function, so both say the same."""

from __future__ import annotations

from pathlib import Path

from notify_pipeline.dns import SES_SPF_INCLUDE, dns_records
from notify_pipeline.registry import Registry
from notify_pipeline.signing import DkimKeyStore


def sending_domains(main: str, testing: str, registry: Registry) -> list[str]:
    """The main and testing domains, then every service's custom domains, each once."""
    domains = [main, testing]
    for service in registry.services:
        domains += [d for d in service.advanced.custom_domains if d not in domains]
    return domains


def deployment_dns_records(*, main: str, testing: str, registry: Registry, keys_dir: Path,
                           selector: str, via_ses: bool) -> list[dict[str, str]]:
    """SPF, DKIM and DMARC records for every sending domain (DKIM keys made on first use);
    SPF names Amazon SES only when the deployment sends through it."""
    domains = sending_domains(main, testing, registry)
    keys = DkimKeyStore(keys_dir, selector).keys(domains)
    records = dns_records(domains=domains, keys=keys,
                          spf_include=SES_SPF_INCLUDE if via_ses else None)
    return [r.as_dict() for r in records]
