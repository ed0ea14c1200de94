"""Dagster resources: one per external system, each a thin factory for a core object.

Which implementation a resource builds is chosen per profile in `profiles.py`; nothing here reads
the environment, and no connection is opened before a run or sensor asks for one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from notify_pipeline.delivery.base import Transport
from notify_pipeline.delivery.pool import TransportPool
from notify_pipeline.delivery.ses import SesTransport
from notify_pipeline.delivery.smtp import SmtpTransport
from notify_pipeline.identity import FileCertSource, HttpCertSource, LocalIssuer, TokenVerifier
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.inbox.gcs import GcsInbox
from notify_pipeline.inbox.gcs_store import GcsBatchStore, storage_client
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.inbox.pubsub import PubSubInbox, subscriber_client
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.ledger.postgres import PostgresLedger
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.policy import Domains
from notify_pipeline.provider_events.sns import CertificateFetcher, SnsVerifier
from notify_pipeline.provider_events.sqs import SqsEventSource
from notify_pipeline.registry import Registry
from notify_pipeline.registry_watch import RegistryWatch
from notify_pipeline.signing import DkimKeyStore, DkimSigner
from notify_pipeline.warehouse.base import Warehouse
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse
from notify_pipeline.warehouse.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse


class DeploymentResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Deployment-wide policy settings: domains, batching bounds, leases, suppression, and how
    long the delivery worker run polls and lives."""

    domain: str
    testing_domain: str
    batch_max_size: int = 2000
    batch_max_age_seconds: float = 1.0
    claim_lease_seconds: float = 300.0
    provider_retry_seconds: float = 30.0
    max_message_attempts: int = 5
    suppression_days: int = 90
    max_request_bytes: int = 10 * 1024 * 1024
    worker_poll_seconds: float = 0.25
    worker_max_seconds: float = 3600.0

    @property
    def domains(self) -> Domains:
        return Domains(main=self.domain, testing=self.testing_domain)

    @property
    def suppress_for(self) -> timedelta:
        return timedelta(days=self.suppression_days)


class RegistryResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The service registry folder, watched: a long-lived run picks up changes within
    `check_seconds`, and a broken change keeps the last good registry in force."""

    path: str
    check_seconds: float = 1.0
    _watch: RegistryWatch | None = PrivateAttr(default=None)

    def watch(self) -> RegistryWatch:
        if self._watch is None:
            self._watch = RegistryWatch(Path(self.path), check_seconds=self.check_seconds)
        return self._watch

    def load(self) -> Registry:
        """The registry in force (loaded and validated as a whole the first time)."""
        return self.watch().current()


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


class GoogleIdentityResource(IdentityResource):
    """Verifies Google-signed ID tokens against Google's published certificates.

    The certificate URL and issuers are settings, so tests can serve their own on 127.0.0.1.
    An unreachable certificate URL fails the run (the batch is retried), never the requests.
    """

    certs_url: str
    issuers: list[str]
    audience: str
    clock_skew_seconds: int = 30
    _certs: Any = PrivateAttr(default=None)

    def verifier(self) -> TokenVerifier:
        if self._certs is None:
            self._certs = HttpCertSource(self.certs_url)
        return TokenVerifier(
            certs=self._certs,
            audience=self.audience,
            issuers=frozenset(self.issuers),
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
    connections: int = 4

    def transport(self) -> Transport:
        """`connections` conversations at once (a pool), or one when it is 1."""
        if self.connections == 1:
            return self._one()
        return TransportPool(self._one, self.connections)

    def _one(self) -> SmtpTransport:
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


class _GcsStagedInboxResource(InboxResource):
    """Common ground of the production inboxes: batches are staged in a GCS bucket."""

    project: str
    storage_emulator_host: str = ""
    max_request_bytes: int = 10 * 1024 * 1024
    _client: Any = PrivateAttr(default=None)

    def _store(self, bucket: str, root: str) -> GcsBatchStore:
        """The batch store, reusing one storage client across sensor ticks."""
        if self._client is None:
            self._client = storage_client(
                project=self.project, emulator_host=self.storage_emulator_host or None
            )
        return GcsBatchStore(
            self._client.bucket(bucket), root=root, max_item_bytes=self.max_request_bytes
        )


class GcsInboxResource(_GcsStagedInboxResource):
    """Requests as objects under a GCS prefix; batches staged in the same bucket."""

    bucket: str
    inbox_prefix: str = "inbox/"
    store_root: str = ""

    def open(self) -> Inbox:
        return GcsInbox(self._store(self.bucket, self.store_root), inbox_prefix=self.inbox_prefix)


class PubSubInboxResource(_GcsStagedInboxResource):
    """Requests as Pub/Sub messages, staged durably in a GCS bucket before they are acked."""

    subscription: str
    staging_bucket: str
    store_root: str = "pubsub/"
    pubsub_emulator_host: str = ""
    _subscriber: Any = PrivateAttr(default=None)

    def open(self) -> Inbox:
        if self._subscriber is None:
            self._subscriber = subscriber_client(emulator_host=self.pubsub_emulator_host or None)
        store = self._store(self.staging_bucket, self.store_root)
        return PubSubInbox(self._subscriber, self.subscription, store)


class PostgresLedgerResource(LedgerResource):
    """The production ledger, shared by every daemon and run (its own schema).

    `dsn` is given as `EnvVar("NOTIFY_LEDGER_DSN")` so Dagster shows the name, not the secret.
    """

    dsn: str
    ledger_schema: str = "notify_ledger"
    connect_timeout_seconds: int = 10

    def open(self) -> Ledger:
        return PostgresLedger(
            self.dsn,
            schema=self.ledger_schema,
            connect_timeout_seconds=self.connect_timeout_seconds,
        )


class BigQueryWarehouseResource(WarehouseResource):
    """The events table in BigQuery, through dagster-gcp's BigQuery resource."""

    bigquery: EmulatorAwareBigQueryResource
    dataset: str = "notify_events"

    def open(self) -> Warehouse:
        return BigQueryWarehouse(
            self.bigquery.make_client(), dataset=self.dataset, location=self.bigquery.location
        )


class SesResource(TransportResource):
    """Amazon SES v2; `AWS_ENDPOINT_URL` (when set) points boto3 at a stand-in."""

    region: str
    configuration_set: str = ""
    max_send_rate: float = 14.0
    concurrency: int = 8

    def transport(self) -> Transport:
        return SesTransport.from_config(
            region=self.region,
            configuration_set=self.configuration_set or None,
            max_send_rate=self.max_send_rate,
            concurrency=self.concurrency,
        )


class ProviderEventsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """SES event notifications: SNS envelopes on an SQS queue, verified before use.

    `cert_base_url` is for tests only: it fetches the (still checked) certificate URL's path
    from a local server instead of from AWS.
    """

    region: str
    queue_url: str
    topic_arns: list[str]
    regions: list[str]
    cert_base_url: str = ""
    wait_seconds: int = 2

    def source(self, ledger: Ledger, suppress_for: timedelta) -> SqsEventSource:
        verifier = SnsVerifier(
            allowed_topic_arns=self.topic_arns,
            allowed_regions=self.regions,
            fetcher=CertificateFetcher(base_url=self.cert_base_url or None),
        )
        return SqsEventSource.from_config(
            region=self.region,
            queue_url=self.queue_url,
            verifier=verifier,
            ledger=ledger,
            suppress_for=suppress_for,
            wait_seconds=self.wait_seconds,
        )
