"""Deployment settings, read from the environment when a resource or command asks for them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Profile(StrEnum):
    LOCAL = "local"
    GCP = "gcp"


class Settings(BaseSettings):
    """Everything a deployment may change. Never read at import time: call `Settings()`."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

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

    batch_max_size: int = Field(default=500, ge=1)
    batch_max_age_seconds: float = Field(default=1.0, ge=0)
    claim_lease_seconds: float = Field(default=300.0, gt=0)
    provider_retry_seconds: float = Field(default=30.0, ge=0)
    max_message_attempts: int = Field(default=5, ge=1)
    suppression_days: int = Field(default=90, ge=1)
    max_request_bytes: int = 10 * 1024 * 1024

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
