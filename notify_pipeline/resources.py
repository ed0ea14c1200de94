"""Dagster resources: one per external system, each a thin factory for a core object.

Which implementation a resource builds is chosen per profile in `profiles.py`; nothing here reads
the environment, and no connection is opened before a run or sensor asks for one.

Dagster builds a new resource object for every run and every sensor tick, so a private attribute
lasts one tick at most. What is worth keeping longer (clients, certificate caches) is kept per
process by `shared`, keyed by the configuration that built it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from pydantic import PrivateAttr

from notify_pipeline import defaults as d
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.delivery.base import Transport
from notify_pipeline.delivery.process_pool import ProcessTransportPool
from notify_pipeline.delivery.ses import SesTransport
from notify_pipeline.delivery.shared_rate import SharedSendRate
from notify_pipeline.delivery.smtp import SmtpTransport
from notify_pipeline.domain_verification import CachedDomainVerifier, DnsPythonLookup
from notify_pipeline.identity import FileCertSource, HttpCertSource, TokenVerifier
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.inbox.gcs import GcsInbox
from notify_pipeline.inbox.gcs_store import GcsBatchStore, storage_client
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.inbox.pubsub import PubSubInbox, subscriber_client
from notify_pipeline.keys import DkimKeys, dkim_keys
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.ledger.postgres import PostgresLedger
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.limits import SendingLimits
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.policy import Domains
from notify_pipeline.provider_events.sns import CertificateFetcher, SnsVerifier
from notify_pipeline.provider_events.sqs import SqsClient, SqsEventSource, sqs_client
from notify_pipeline.registry import Registry
from notify_pipeline.registry_watch import RegistryWatch
from notify_pipeline.sending_domains import custom_domain_verifier
from notify_pipeline.signing import DkimSigner
from notify_pipeline.warehouse.base import Warehouse
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

T = TypeVar("T")

_SHARED: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 32


def shared(key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    """`build()` once per process for `key` (which names everything the result depends on)."""
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = build()
            if len(_SHARED) > _SHARED_MAX:
                _SHARED.popitem(last=False)
        value: T = _SHARED[key]
        return value


class DeploymentResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Deployment-wide policy settings: domains, batching bounds, leases, suppression, and how
    long the delivery worker run polls and lives."""

    domain: str = d.DOMAIN
    testing_domain: str = d.TESTING_DOMAIN
    batch_max_size: int = d.BATCH_MAX_SIZE
    batch_max_age_seconds: float = d.BATCH_MAX_AGE_SECONDS
    claim_lease_seconds: float = d.CLAIM_LEASE_SECONDS
    provider_retry_seconds: float = d.PROVIDER_RETRY_SECONDS
    max_message_attempts: int = d.MAX_MESSAGE_ATTEMPTS
    recipient_retry_hours: float = d.RECIPIENT_RETRY_HOURS
    suppression_days: int = d.SUPPRESSION_DAYS
    max_request_bytes: int = d.MAX_REQUEST_BYTES
    worker_poll_seconds: float = d.WORKER_POLL_SECONDS
    worker_max_seconds: float = d.WORKER_MAX_SECONDS
    delivery_workers: int = d.DELIVERY_WORKERS
    run_retention_days: int = d.RUN_RETENTION_DAYS
    via_ses: bool = False  # SPF then names Amazon SES
    limit_per_minute: int = d.LIMIT_PER_MINUTE
    limit_per_day: int = d.LIMIT_PER_DAY
    warmup_schedule: list[int] = list(d.WARMUP_SCHEDULE)

    @property
    def domains(self) -> Domains:
        return Domains(main=self.domain, testing=self.testing_domain)

    @property
    def suppress_for(self) -> timedelta:
        return timedelta(days=self.suppression_days)

    @property
    def recipient_retry_for(self) -> timedelta:
        return timedelta(hours=self.recipient_retry_hours)

    @property
    def sending_limits(self) -> SendingLimits:
        return SendingLimits(self.limit_per_minute, self.limit_per_day,
                             tuple(self.warmup_schedule))


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
    clock_skew_seconds: int = d.TOKEN_CLOCK_SKEW_SECONDS

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
    clock_skew_seconds: int = d.TOKEN_CLOCK_SKEW_SECONDS
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
    """DKIM keys per sending domain, from `key_source` (`home`: generated on first use under
    `keys_dir`; `files:<folder>` or `secret-manager:<project>`: read only), each domain signing
    with its entry in `selectors` or else `selector`."""

    keys_dir: str
    selector: str
    key_source: str = d.DKIM_KEY_SOURCE
    selectors: dict[str, str] = {}
    dns_nameservers: list[str] = []
    domain_check_seconds: float = d.DOMAIN_CHECK_SECONDS
    _signers: dict[str, DkimSigner] = PrivateAttr(default_factory=dict)

    def key_ring(self) -> DkimKeys:
        """Built once per process, so a Secret Manager client is not made per run. (Not `keys`:
        Dagster reads a resource with `dict(self)`, which a `keys` method would hijack.)"""
        key = ("dkim-keys", self.key_source, self.keys_dir, self.selector,
               tuple(sorted(self.selectors.items())))
        return shared(key, lambda: dkim_keys(key_source=self.key_source,
                                             keys_dir=Path(self.keys_dir),
                                             selector=self.selector, selectors=self.selectors))

    def domain_check(self, *, via_ses: bool) -> CachedDomainVerifier:
        """Custom domains' DNS verification, its answers kept per process across runs."""
        key = ("domain-check", self.key_source, self.keys_dir, self.selector,
               tuple(sorted(self.selectors.items())), tuple(self.dns_nameservers),
               self.domain_check_seconds, via_ses)
        keys = self.key_ring()  # outside `shared`: its lock is not re-entrant
        return shared(key, lambda: custom_domain_verifier(
            keys, via_ses=via_ses, lookup=DnsPythonLookup(self.dns_nameservers),
            ttl_seconds=self.domain_check_seconds))

    def signer_for(self, domain: str) -> DkimSigner:
        if domain not in self._signers:
            self._signers[domain] = DkimSigner(self.key_ring().key_for(domain))
        return self._signers[domain]


class TransportResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Builds the transport that hands messages to the provider; `ledger` is the run's own, for
    what every worker must share (SES's send rate)."""

    def transport(self, ledger: Ledger | None = None) -> Transport:
        raise NotImplementedError


class SmtpResource(TransportResource):
    """An SMTP relay: the local sink, a mailtrap inbox or an organisation's smarthost.

    The password is given as `EnvVar("NOTIFY_SMTP_PASSWORD")`, so Dagster shows the variable's
    name, never its value.
    """

    host: str = d.SMTP_HOST
    port: int = d.SMTP_PORT
    timeout_seconds: float = d.SMTP_TIMEOUT_SECONDS
    starttls: bool = False
    username: str = ""
    password: str = ""
    connections: int = d.SMTP_CONNECTIONS

    def transport(self, ledger: Ledger | None = None) -> Transport:
        """`connections` conversations at once (in a process of their own), or one, in the
        run's process, when it is 1."""
        if self.connections == 1:
            return self._one()
        return ProcessTransportPool(self._one(), self.connections)

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
    max_request_bytes: int = d.MAX_REQUEST_BYTES

    def _store(self, bucket: str, root: str) -> GcsBatchStore:
        """The batch store, on this process's one storage client for the project."""
        emulator = self.storage_emulator_host or None
        client = shared(("storage", self.project, emulator),
                        lambda: storage_client(project=self.project, emulator_host=emulator))
        return GcsBatchStore(
            client.bucket(bucket), root=root, max_item_bytes=self.max_request_bytes
        )


class GcsInboxResource(_GcsStagedInboxResource):
    """Requests as objects under a GCS prefix; batches staged in the same bucket."""

    bucket: str
    inbox_prefix: str = d.GCS_INBOX_PREFIX
    store_root: str = ""

    def open(self) -> Inbox:
        return GcsInbox(self._store(self.bucket, self.store_root), inbox_prefix=self.inbox_prefix)


class PubSubInboxResource(_GcsStagedInboxResource):
    """Requests as Pub/Sub messages, staged durably in a GCS bucket before they are acked."""

    subscription: str
    staging_bucket: str
    store_root: str = d.PUBSUB_STORE_ROOT
    pubsub_emulator_host: str = ""

    def open(self) -> Inbox:
        emulator = self.pubsub_emulator_host or None
        subscriber = shared(("pubsub", emulator), lambda: subscriber_client(emulator_host=emulator))
        store = self._store(self.staging_bucket, self.store_root)
        return PubSubInbox(subscriber, self.subscription, store)


class PostgresLedgerResource(LedgerResource):
    """The production ledger, shared by every daemon and run (its own schema).

    `dsn` is given as `EnvVar("NOTIFY_LEDGER_DSN")` so Dagster shows the name, not the secret.
    """

    dsn: str
    ledger_schema: str = d.LEDGER_SCHEMA
    connect_timeout_seconds: int = d.LEDGER_CONNECT_TIMEOUT_SECONDS

    def open(self) -> Ledger:
        return PostgresLedger(
            self.dsn,
            schema=self.ledger_schema,
            connect_timeout_seconds=self.connect_timeout_seconds,
        )


class BigQueryWarehouseResource(WarehouseResource):
    """The events table in BigQuery, through dagster-gcp's BigQuery resource."""

    bigquery: EmulatorAwareBigQueryResource
    dataset: str = d.BIGQUERY_DATASET

    def open(self) -> Warehouse:
        return BigQueryWarehouse(
            self.bigquery.make_client(), dataset=self.dataset, location=self.bigquery.location
        )


class SesResource(TransportResource):
    """Amazon SES v2; `AWS_ENDPOINT_URL` (when set) points boto3 at a stand-in. Given the run's
    ledger, the account's send rate is shared with every other worker on it (per region)."""

    region: str = d.SES_REGION
    configuration_set: str = ""
    max_send_rate: float = d.SES_MAX_SEND_RATE
    concurrency: int = d.SES_CONCURRENCY

    def transport(self, ledger: Ledger | None = None) -> Transport:
        limiter = None if ledger is None else SharedSendRate(
            ledger, bucket=f"ses:{self.region}", rate=self.max_send_rate)
        return SesTransport.from_config(
            region=self.region,
            configuration_set=self.configuration_set or None,
            max_send_rate=self.max_send_rate,
            concurrency=self.concurrency,
            limiter=limiter,
        )


class ProviderEventsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """SES event notifications: SNS envelopes on an SQS queue, verified before use.

    The SQS client and the SNS verifier (with its certificate cache) are built once per process,
    not once per sensor tick. `endpoint_url` points boto3 at a stand-in (`AWS_ENDPOINT_URL`);
    `cert_base_url` is for tests only: it fetches the (still checked) certificate URL's path from
    a local server instead of from AWS.
    """

    region: str = d.SES_REGION
    queue_url: str
    topic_arns: list[str]
    regions: list[str]
    endpoint_url: str = ""
    cert_base_url: str = ""
    wait_seconds: int = d.SQS_WAIT_SECONDS

    def source(self, ledger: Ledger, suppress_for: timedelta) -> SqsEventSource:
        return SqsEventSource(
            client=self._client(),
            queue_url=self.queue_url,
            verifier=self._verifier(),
            ledger=ledger,
            suppress_for=suppress_for,
            wait_seconds=self.wait_seconds,
        )

    def _client(self) -> SqsClient:
        endpoint = self.endpoint_url or None
        return shared(
            ("sqs", self.region, endpoint, self.wait_seconds),
            lambda: sqs_client(region=self.region, endpoint_url=endpoint,
                               wait_seconds=self.wait_seconds),
        )

    def _verifier(self) -> SnsVerifier:
        topics, regions = tuple(sorted(self.topic_arns)), tuple(sorted(self.regions))
        return shared(
            ("sns", topics, regions, self.cert_base_url),
            lambda: SnsVerifier(
                allowed_topic_arns=topics,
                allowed_regions=regions,
                fetcher=CertificateFetcher(base_url=self.cert_base_url or None),
            ),
        )
