"""Deployment settings, read from the environment when a resource or command asks for them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Profile(StrEnum):
    LOCAL = "local"
    GCP = "gcp"


class InboxKind(StrEnum):
    GCS = "gcs"
    PUBSUB = "pubsub"


class TransportKind(StrEnum):
    SES = "ses"
    SMTP = "smtp"


GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class Settings(BaseSettings):
    """Everything a deployment may change. Never read at import time: call `Settings()`."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore", populate_by_name=True)

    profile: Profile = Profile.LOCAL
    home: Path = Path(".notify")
    registry: Path = Path("registry")

    domain: str = "notify.example.org"
    testing_domain: str = "email-testing.notify.example.org"
    dkim_selector: str = "notify1"
    audience: str = ""
    token_issuer: str = ""
    token_clock_skew_seconds: int = Field(default=30, ge=0, le=300)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_timeout_seconds: float = 30.0
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_connections: int = Field(default=4, ge=1, le=64)

    # gcp profile. Emulator endpoints come from the standard variables the client libraries
    # themselves honour (PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL).
    gcp_project: str = ""
    inbox: InboxKind = InboxKind.GCS
    gcs_bucket: str = ""
    gcs_inbox_prefix: str = "inbox/"
    pubsub_subscription: str = ""
    token_certs_url: str = GOOGLE_CERTS_URL
    token_issuers: tuple[str, ...] = GOOGLE_ISSUERS
    transport: TransportKind = TransportKind.SES
    ses_region: str = "eu-west-1"
    ses_configuration_set: str = ""
    ses_max_send_rate: float = Field(default=14.0, gt=0)
    ses_concurrency: int = Field(default=8, ge=1, le=64)
    ses_events_queue_url: str = ""
    sns_topic_arns: tuple[str, ...] = ()
    sns_regions: tuple[str, ...] = ()
    sns_cert_base_url: str = ""  # tests only: where to fetch SNS signing certificates from
    ledger_dsn: SecretStr = SecretStr("")
    ledger_schema: str = "notify_ledger"
    bigquery_project: str = ""
    bigquery_dataset: str = "notify_events"
    bigquery_location: str = "EU"
    bigquery_endpoint: str = ""
    storage_emulator_host: str = Field(default="", validation_alias="STORAGE_EMULATOR_HOST")
    pubsub_emulator_host: str = Field(default="", validation_alias="PUBSUB_EMULATOR_HOST")
    aws_endpoint_url: str = Field(default="", validation_alias="AWS_ENDPOINT_URL")

    batch_max_size: int = Field(default=2000, ge=1)
    batch_max_age_seconds: float = Field(default=1.0, ge=0)
    claim_lease_seconds: float = Field(default=300.0, gt=0)
    provider_retry_seconds: float = Field(default=30.0, ge=0)
    max_message_attempts: int = Field(default=5, ge=1)
    suppression_days: int = Field(default=90, ge=1)
    max_request_bytes: int = 10 * 1024 * 1024

    # Analytics: how many days of events `sheets_export` writes.
    export_days: int = Field(default=90, ge=1)
    sheets_folder_id: str = ""  # gcp: the Shared Drive folder holding one Sheet per service

    # One long-lived delivery_worker run instead of a run per batch (see sensors/worker.py).
    delivery_worker: bool = True
    worker_poll_seconds: float = Field(default=0.25, gt=0)
    worker_max_seconds: float = Field(default=3600.0, gt=0)

    @property
    def deployment_audience(self) -> str:
        """The `aud` every identity token must carry."""
        return self.audience or f"https://{self.domain}"

    @property
    def local_issuer(self) -> str:
        """The `iss` of tokens minted by the local profile's issuer."""
        return self.token_issuer or f"https://{self.domain}/local-issuer"

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
