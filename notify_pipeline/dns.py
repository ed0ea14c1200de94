"""The DNS records each sending domain needs (SPF, DKIM, DMARC), and DKIM verification against
them through an in-memory TXT resolver, so tests and checks never touch the network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import dkim

from notify_pipeline.signing import DkimKey

DMARC_POLICIES: Final = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DnsRecord:
    """One record to publish. `name` has no trailing dot.

    `value` is the logical TXT string. DKIM values are longer than 255 bytes, so a zone file or
    a DNS provider's API needs them as several quoted strings; resolvers join them back.
    """

    name: str
    type: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "value": self.value}


SES_SPF_INCLUDE = "amazonses.com"


def dns_records(
    *,
    domains: Sequence[str],
    keys: Sequence[DkimKey],
    spf_include: str | None = SES_SPF_INCLUDE,
    dmarc_policy: str = "quarantine",
    dmarc_rua: str | None = None,
) -> list[DnsRecord]:
    """SPF, DKIM (one per key) and DMARC records for every sending domain, in `domains` order.

    Raises ValueError for an unknown DMARC policy or a domain without a key.
    """
    if dmarc_policy not in DMARC_POLICIES:
        raise ValueError(f"dmarc_policy must be one of {', '.join(DMARC_POLICIES)}")
    records: list[DnsRecord] = []
    for domain in dict.fromkeys(domain.lower() for domain in domains):
        domain_keys = [key for key in keys if key.domain == domain]
        if not domain_keys:
            raise ValueError(f"no DKIM key for sending domain {domain}")
        records.append(spf_record(domain, spf_include))
        records.extend(dkim_record(key) for key in domain_keys)
        records.append(dmarc_record(domain, dmarc_policy, dmarc_rua))
    return records


def spf_record(domain: str, include: str | None) -> DnsRecord:
    """`include` names the provider's senders (SES's for the `ses` transport); None (an SMTP
    relay we cannot name) lists none, and DMARC passes on DKIM alone.

    `~all` (softfail), not `-all`, on purpose.

    Mail also leaves through SMTP relays (the `smtp` transport) that `include` does not list,
    and is forwarded by recipients' mailboxes. With `-all` some receivers reject such mail at
    SMTP time on SPF alone, before DKIM is looked at, although it carries a valid aligned DKIM
    signature. With `~all` DMARC makes the decision, and DMARC passes on DKIM alone.
    """
    mechanisms = f"include:{include} " if include else ""
    return DnsRecord(domain, "TXT", f"v=spf1 {mechanisms}~all")


def dkim_record(key: DkimKey) -> DnsRecord:
    return DnsRecord(
        f"{key.selector}._domainkey.{key.domain}",
        "TXT",
        f"v=DKIM1; k=rsa; p={key.public_key_b64()}",
    )


def dmarc_record(domain: str, policy: str, rua: str | None) -> DnsRecord:
    """`adkim=s` because we sign with the From domain itself, so strict alignment costs nothing
    and stops a signature from another subdomain counting; `aspf=r` because SES's custom MAIL
    FROM domain is a subdomain (e.g. `bounce.<domain>`), which only relaxed alignment accepts."""
    value = f"v=DMARC1; p={policy}; adkim=s; aspf=r"
    if rua:
        value += f"; rua={rua if rua.startswith('mailto:') else 'mailto:' + rua}"
    return DnsRecord(f"_dmarc.{domain}", "TXT", value)


class TxtResolver(Protocol):
    """dkimpy's `dnsfunc`: called as `dnsfunc(name, timeout=...)` with the name as bytes and a
    trailing dot; returns the TXT value (strings joined) as bytes, or None when there is none."""

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None: ...


def txt_resolver(records: Mapping[str, str] | Iterable[DnsRecord]) -> TxtResolver:
    """A `TxtResolver` answering from `records`: `dns_records` output or {name: TXT value}."""
    table = _txt_table(records)

    def resolve(name: bytes, timeout: float = 5) -> bytes | None:
        del timeout  # answered from memory
        value = table.get(_normal_name(name.decode("ascii", errors="replace")))
        return None if value is None else value.encode()

    return resolve


def _txt_table(records: Mapping[str, str] | Iterable[DnsRecord]) -> dict[str, str]:
    if isinstance(records, Mapping):
        return {_normal_name(name): value for name, value in records.items()}
    table: dict[str, str] = {}
    for record in records:
        if record.type == "TXT":
            table.setdefault(_normal_name(record.name), record.value)
    return table


def _normal_name(name: str) -> str:
    return name.lower().rstrip(".")


def verify(signed: bytes, records: Mapping[str, str] | Iterable[DnsRecord]) -> bool:
    """Whether the first DKIM signature on `signed` verifies against `records` (no network).

    `records` is `dns_records(...)` output or a mapping of TXT name to value.
    """
    return bool(dkim.verify(signed, dnsfunc=txt_resolver(records)))
