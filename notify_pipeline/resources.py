"""Dagster resources: one per external system, each a thin factory for a core object.

Which implementation a resource builds is chosen per profile in `profiles.py`; nothing here reads
the environment, and no connection is opened before a run or sensor asks for one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from notify_pipeline.delivery.base import Transport
from notify_pipeline.delivery.smtp import SmtpTransport
from notify_pipeline.identity import FileCertSource, LocalIssuer, TokenVerifier
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.policy import Domains
from notify_pipeline.registry import Registry, load_registry
from notify_pipeline.signing import DkimKeyStore, DkimSigner
from notify_pipeline.warehouse.base import Warehouse
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse


class DeploymentResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Deployment-wide policy settings: domains, batching bounds, leases and suppression."""

    domain: str
    testing_domain: str
    batch_max_size: int = 500
    batch_max_age_seconds: float = 1.0
    claim_lease_seconds: float = 300.0
    provider_retry_seconds: float = 30.0
    max_message_attempts: int = 5
    suppression_days: int = 90
    max_request_bytes: int = 10 * 1024 * 1024

    @property
    def domains(self) -> Domains:
        return Domains(main=self.domain, testing=self.testing_domain)

    @property
    def suppress_for(self) -> timedelta:
        return timedelta(days=self.suppression_days)


class RegistryResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The service registry folder; loaded (and validated as a whole) once per process."""

    path: str
    _registry: Registry | None = PrivateAttr(default=None)

    def load(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry(Path(self.path))
        return self._registry


class IdentityResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Builds the verifier for callers' ID tokens."""

    def verifier(self) -> TokenVerifier:
        raise NotImplementedError


class LocalIdentityResource(IdentityResource):
    """Verifies ID tokens minted by the local profile's own RS256 issuer."""

    keys_dir: str
    issuer: str
    audience: str
    clock_skew_seconds: int = 30

    def verifier(self) -> TokenVerifier:
        issuer = LocalIssuer(Path(self.keys_dir), self.issuer)
        return TokenVerifier(
            certs=FileCertSource(issuer.certs_path),
            audience=self.audience,
            issuers=frozenset({self.issuer}),
            clock_skew_seconds=self.clock_skew_seconds,
        )


class SigningResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """DKIM keys per sending domain, generated on first use in the local profile."""

    keys_dir: str
    selector: str
    _signers: dict[str, DkimSigner] = PrivateAttr(default_factory=dict)

    def signer_for(self, domain: str) -> DkimSigner:
        if domain not in self._signers:
            store = DkimKeyStore(Path(self.keys_dir), self.selector)
            self._signers[domain] = DkimSigner(store.key_for(domain))
        return self._signers[domain]


class TransportResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Builds the transport that hands messages to the provider."""

    def transport(self) -> Transport:
        raise NotImplementedError


class SmtpResource(TransportResource):
    """An SMTP relay: the local sink, a mailtrap inbox or an organisation's smarthost.

    The password is given as `EnvVar("NOTIFY_SMTP_PASSWORD")`, so Dagster shows the variable's
    name, never its value.
    """

    host: str
    port: int
    timeout_seconds: float = 30.0
    starttls: bool = False
    username: str = ""
    password: str = ""

    def transport(self) -> Transport:
        return SmtpTransport(
            host=self.host,
            port=self.port,
            timeout=self.timeout_seconds,
            starttls=self.starttls,
            username=self.username or None,
            password=self.password or None,
        )


class LedgerResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Opens the delivery ledger; callers close what they open."""

    def open(self) -> Ledger:
        raise NotImplementedError


class SqliteLedgerResource(LedgerResource):
    path: str

    def open(self) -> Ledger:
        return SqliteLedger(Path(self.path))


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Opens the events warehouse."""

    def open(self) -> Warehouse:
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    path: str

    def open(self) -> Warehouse:
        return DuckDBWarehouse(Path(self.path))


class InboxResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Opens the inbox requests arrive in."""

    def open(self) -> Inbox:
        raise NotImplementedError


class LocalInboxResource(InboxResource):
    home: str

    def open(self) -> Inbox:
        return LocalInbox(Path(self.home))
