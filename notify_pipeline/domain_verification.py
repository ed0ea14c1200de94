"""Whether a custom sending domain is verified: its SPF, DKIM and DMARC records are published in
DNS and match what `notify dns-records` asks for.

Matching is what receivers need, not byte equality with our suggestion: the DKIM record must carry
our public key (`p=`), the domain exactly one SPF record (two are an SPF error) naming our
provider's `include:` when there is one, and `_dmarc` exactly one DMARC record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from notify_pipeline.dns import DnsRecord
from notify_pipeline.errors import NotifyError


class DnsUnavailable(NotifyError):
    """DNS could not answer (timeout, SERVFAIL): nothing is decided, the work is retried later."""


class RecordState(StrEnum):
    MATCHES = "matches"
    MISSING = "missing"
    DIFFERENT = "different"


class TxtLookup(Protocol):
    """The TXT strings (each record's strings joined) published at `name`; () when there are
    none (NXDOMAIN or no TXT records). Raises `DnsUnavailable` when DNS does not answer."""

    def txt(self, name: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class RecordCheck:
    record: DnsRecord
    state: RecordState
    found: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {**self.record.as_dict(), "state": self.state.value, "found": list(self.found)}


@dataclass(frozen=True)
class DomainVerification:
    """One domain's records, each checked against DNS; verified when every one matches."""

    domain: str
    checks: tuple[RecordCheck, ...]

    @property
    def verified(self) -> bool:
        return all(check.state is RecordState.MATCHES for check in self.checks)

    def problems(self) -> str:
        """The records to fix, in words: `DKIM notify1._domainkey.x missing, ...`."""
        return ", ".join(f"{_kind(c.record)} {c.record.name} {c.state.value}"
                         for c in self.checks if c.state is not RecordState.MATCHES)

    def as_dict(self) -> dict[str, object]:
        return {"domain": self.domain, "verified": self.verified,
                "records": [check.as_dict() for check in self.checks]}


def verify_domain(domain: str, records: Sequence[DnsRecord],
                  lookup: TxtLookup) -> DomainVerification:
    """Check `domain`'s records (from `dns_records`) against what `lookup` finds."""
    domain = domain.lower().rstrip(".")
    own = [r for r in records if r.type == "TXT" and _owner(r.name) == domain]
    return DomainVerification(domain, tuple(_check(r, lookup.txt(r.name)) for r in own))


def _owner(name: str) -> str:
    """The sending domain a record belongs to (`s._domainkey.d` and `_dmarc.d` belong to d)."""
    name = name.lower().rstrip(".")
    if name.startswith("_dmarc."):
        return name.removeprefix("_dmarc.")
    return name.partition("._domainkey.")[2] or name


def _kind(record: DnsRecord) -> str:
    if "._domainkey." in record.name:
        return "DKIM"
    return "DMARC" if record.name.startswith("_dmarc.") else "SPF"


def _check(record: DnsRecord, found: tuple[str, ...]) -> RecordCheck:
    kind = _kind(record)
    if kind == "DKIM":
        relevant = tuple(v for v in found if "p" in _tags(v))
        ok = any(_tags(v)["p"] == _tags(record.value)["p"] for v in relevant)
    elif kind == "SPF":
        relevant = tuple(v for v in found if v.lower().startswith("v=spf1"))
        include = next((t for t in record.value.split() if t.startswith("include:")), None)
        ok = len(relevant) == 1 and (include is None or include in relevant[0].split())
    else:
        relevant = tuple(v for v in found if v.replace(" ", "").startswith("v=DMARC1;"))
        ok = len(relevant) == 1
    state = RecordState.MATCHES if ok else (
        RecordState.DIFFERENT if relevant else RecordState.MISSING)
    return RecordCheck(record, state, relevant)


def _tags(value: str) -> dict[str, str]:
    """A DKIM record's tags; whitespace inside values (folded base64) is dropped."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, eq, tag_value = part.partition("=")
        if eq:
            tags[name.strip()] = "".join(tag_value.split())
    return tags


class DnsPythonLookup:
    """`TxtLookup` through dnspython: the system's resolvers, or `nameservers` (`host` or
    `host:port`, e.g. a local test server)."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0) -> None:
        import dns.resolver

        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            hosts = [_host_port(n) for n in nameservers]
            self._resolver.nameservers = [host for host, _ in hosts]
            self._resolver.nameserver_ports = {host: port for host, port in hosts}
        self._resolver.lifetime = timeout

    def txt(self, name: str) -> tuple[str, ...]:
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ()
        except dns.exception.DNSException as exc:
            raise DnsUnavailable(f"DNS did not answer for {name} ({type(exc).__name__})") from None
        return tuple(b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer)


def _host_port(server: str) -> tuple[str, int]:
    host, colon, port = server.rpartition(":")
    return (host, int(port)) if colon and port.isdigit() else (server, 53)


class CachedDomainVerifier:
    """Each custom domain's verification, looked up at most once per `ttl_seconds` per process
    (a failed one once per `retry_seconds`, so a newly published record is seen soon)."""

    def __init__(self, expected: Callable[[str], Sequence[DnsRecord]], lookup: TxtLookup, *,
                 ttl_seconds: float = 300.0, retry_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._expected = expected
        self._lookup = lookup
        self._ttl, self._retry = ttl_seconds, retry_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, DomainVerification]] = {}
        self._lock = threading.Lock()

    def verification(self, domain: str) -> DomainVerification:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(domain)
        if cached and cached[0] > now:
            return cached[1]
        result = verify_domain(domain, self._expected(domain), self._lookup)
        keep = self._ttl if result.verified else min(self._retry, self._ttl)
        with self._lock:
            self._cache[domain] = (now + keep, result)
        return result
