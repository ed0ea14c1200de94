"""An authoritative DNS server on 127.0.0.1 whose TXT records the tests publish and change.

`dns_server` (function scope) is a real UDP/TCP peer (dnslib's server): the code under test
resolves through dnspython against it exactly as it would against a real nameserver. Names not
published answer NXDOMAIN; `fail(name)` makes a name answer SERVFAIL (DNS trouble, not absence).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from notify_pipeline.dns import DnsRecord
from tests.conftest import free_port


class Zone(BaseResolver):  # type: ignore[misc]
    """TXT records by name; thread-safe, since the server answers on its own threads."""

    def __init__(self) -> None:
        self._txt: dict[str, list[str]] = {}
        self._failing: set[str] = set()
        self._lock = threading.Lock()
        self.queries: list[str] = []

    def publish(self, name: str, value: str) -> None:
        with self._lock:
            self._txt.setdefault(_normal(name), []).append(value)

    def publish_all(self, records: Iterable[DnsRecord]) -> None:
        for record in records:
            self.publish(record.name, record.value)

    def remove(self, name: str) -> None:
        with self._lock:
            self._txt.pop(_normal(name), None)

    def fail(self, name: str) -> None:
        with self._lock:
            self._failing.add(_normal(name))

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = _normal(str(request.q.qname))
        with self._lock:
            self.queries.append(name)
            if name in self._failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            values = list(self._txt.get(name, ()))
        if not values:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in values:
                # Long values go as several strings of at most 255 bytes, as zone files do.
                data = value.encode()
                chunks = [data[i:i + 255] for i in range(0, len(data), 255)]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


class LocalDns:
    def __init__(self, zone: Zone, port: int) -> None:
        self.zone = zone
        self.port = port

    @property
    def nameserver(self) -> str:
        """As `NOTIFY_DNS_NAMESERVERS` lists it."""
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def dns_server() -> Iterator[LocalDns]:
    zone = Zone()
    port = free_port()
    quiet = DNSLogger(logf=lambda _line: None)
    servers = [DNSServer(zone, address="127.0.0.1", port=port, tcp=tcp, logger=quiet)
               for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    try:
        yield LocalDns(zone, port)
    finally:
        for server in servers:
            server.stop()
