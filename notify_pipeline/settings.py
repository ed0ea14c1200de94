"""Deployment settings, read from the environment when a resource or command asks for them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from notify_pipeline import defaults as d
from notify_pipeline import deployment


class Profile(StrEnum):
    LOCAL = "local"
    GCP = "gcp"


class InboxKind(StrEnum):
    GCS = "gcs"
    PUBSUB = "pubsub"


class TransportKind(StrEnum):
    SES = "ses"
    SMTP = "smtp"


class Settings(BaseSettings):
    """Everything a deployment may change. Never read at import time: call `Settings()`."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore", populate_by_name=True)

    profile: Profile = Profile.LOCAL
    home: Path = Path(d.HOME)
    registry: Path = Path(d.REGISTRY)

    domain: str = d.DOMAIN
    testing_domain: str = d.TESTING_DOMAIN
    dkim_selector: str = d.DKIM_SELECTOR
    # Where DKIM keys come from: home | files:<folder> | secret-manager:<project> (see `keys`),
    # and per-domain selectors overriding `dkim_selector`, as a JSON object.
    dkim_key_source: str = d.DKIM_KEY_SOURCE
    dkim_selectors: dict[str, str] = Field(default_factory=dict)
    # Custom domains are verified in DNS before mail leaves from them: through these resolvers
    # (`host` or `host:port`; none: the system's), the answer kept this many seconds.
    dns_nameservers: tuple[str, ...] = ()
    domain_check_seconds: float = Field(default=d.DOMAIN_CHECK_SECONDS, gt=0)
    audience: str = ""
    token_issuer: str = ""
    token_clock_skew_seconds: int = Field(default=d.TOKEN_CLOCK_SKEW_SECONDS, ge=0, le=300)

    smtp_host: str = d.SMTP_HOST
    smtp_port: int = d.SMTP_PORT
    smtp_timeout_seconds: float = d.SMTP_TIMEOUT_SECONDS
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_connections: int = Field(default=d.SMTP_CONNECTIONS, ge=1, le=64)

    # gcp profile. Emulator endpoints come from the standard variables the client libraries
    # themselves honour (PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL).
    gcp_project: str = ""
    inbox: InboxKind = InboxKind.GCS
    gcs_bucket: str = ""
    gcs_inbox_prefix: str = d.GCS_INBOX_PREFIX
    pubsub_subscription: str = ""
    token_certs_url: str = d.GOOGLE_CERTS_URL
    token_issuers: tuple[str, ...] = d.GOOGLE_ISSUERS
    transport: TransportKind = TransportKind.SES
    ses_region: str = d.SES_REGION
    ses_configuration_set: str = ""
    ses_max_send_rate: float = Field(default=d.SES_MAX_SEND_RATE, gt=0)
    ses_concurrency: int = Field(default=d.SES_CONCURRENCY, ge=1, le=64)
    ses_events_queue_url: str = ""
    sns_topic_arns: tuple[str, ...] = ()
    sns_regions: tuple[str, ...] = ()
    sns_cert_base_url: str = ""  # tests only: where to fetch SNS signing certificates from
    ledger_dsn: SecretStr = SecretStr("")
    ledger_schema: str = d.LEDGER_SCHEMA
    bigquery_project: str = ""
    bigquery_dataset: str = d.BIGQUERY_DATASET
    bigquery_location: str = d.BIGQUERY_LOCATION
    bigquery_endpoint: str = ""
    storage_emulator_host: str = Field(default="", validation_alias="STORAGE_EMULATOR_HOST")
    pubsub_emulator_host: str = Field(default="", validation_alias="PUBSUB_EMULATOR_HOST")
    aws_endpoint_url: str = Field(default="", validation_alias="AWS_ENDPOINT_URL")

    batch_max_size: int = Field(default=d.BATCH_MAX_SIZE, ge=1)
    batch_max_age_seconds: float = Field(default=d.BATCH_MAX_AGE_SECONDS, ge=0)
    claim_lease_seconds: float = Field(default=d.CLAIM_LEASE_SECONDS, gt=0)
    provider_retry_seconds: float = Field(default=d.PROVIDER_RETRY_SECONDS, ge=0)
    max_message_attempts: int = Field(default=d.MAX_MESSAGE_ATTEMPTS, ge=1)
    recipient_retry_hours: float = Field(default=d.RECIPIENT_RETRY_HOURS, ge=0)
    suppression_days: int = Field(default=d.SUPPRESSION_DAYS, ge=1)
    max_request_bytes: int = d.MAX_REQUEST_BYTES

    # Sending limits: defaults for services without their own (0: none), and dedicated IP
    # pools' warm-up schedule (daily caps from a pool's first send; empty: no warm-up).
    limit_per_minute: int = Field(default=d.LIMIT_PER_MINUTE, ge=0)
    limit_per_day: int = Field(default=d.LIMIT_PER_DAY, ge=0)
    warmup_schedule: tuple[Annotated[int, Field(ge=1)], ...] = d.WARMUP_SCHEDULE

    # Analytics: how many days of events `sheets_export` writes.
    export_days: int = Field(default=90, ge=1)
    sheets_folder_id: str = ""  # gcp: the Shared Drive folder holding one Sheet per service

    # Long-lived delivery_worker runs instead of a run per batch (see sensors/worker.py):
    # this many at once, each in its own process (a pod under the Kubernetes run launcher).
    delivery_worker: bool = True
    delivery_workers: int = Field(default=d.DELIVERY_WORKERS, ge=1, le=64)
    worker_poll_seconds: float = Field(default=d.WORKER_POLL_SECONDS, gt=0)
    worker_max_seconds: float = Field(default=d.WORKER_MAX_SECONDS, gt=0)
    # Finished Dagster runs older than this are deleted daily (0: kept for ever).
    run_retention_days: int = Field(default=d.RUN_RETENTION_DAYS, ge=0)

    @property
    def sends_via_ses(self) -> bool:
        """Whether mail leaves through Amazon SES (so SPF must name it)."""
        return self.profile is Profile.GCP and self.transport is TransportKind.SES

    @property
    def deployment_audience(self) -> str:
        """The `aud` every identity token must carry."""
        return deployment.deployment_audience(self.domain, self.audience)

    @property
    def local_issuer(self) -> str:
        """The `iss` of tokens minted by the local profile's issuer."""
        return deployment.local_issuer(self.domain, self.token_issuer)

    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def mail_dir(self) -> Path:
        return self.home / "mail"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def ledger_path(self) -> Path:
        return self.home / "ledger.sqlite3"
