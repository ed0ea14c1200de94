"""The one place that maps a profile (`local`, `gcp`) to the resources a deployment runs with."""

from __future__ import annotations

from typing import Any

import dagster as dg

from notify_pipeline.errors import ConfigError
from notify_pipeline.resources import (
    DeploymentResource,
    DuckDBWarehouseResource,
    LocalIdentityResource,
    LocalInboxResource,
    RegistryResource,
    SigningResource,
    SmtpResource,
    SqliteLedgerResource,
)
from notify_pipeline.settings import Profile, Settings


def resources_for(settings: Settings) -> dict[str, Any]:
    """Resources keyed by the names the jobs and sensors ask for."""
    if settings.profile is Profile.LOCAL:
        return _local(settings)
    raise ConfigError(
        "NOTIFY_PROFILE",
        f"the {settings.profile.value!r} profile is not available in this release; use 'local'",
    )


def _local(s: Settings) -> dict[str, Any]:
    home = s.home.resolve()
    return {
        "deployment": DeploymentResource(
            domain=s.domain,
            testing_domain=s.testing_domain,
            batch_max_size=s.batch_max_size,
            batch_max_age_seconds=s.batch_max_age_seconds,
            claim_lease_seconds=s.claim_lease_seconds,
            provider_retry_seconds=s.provider_retry_seconds,
            max_message_attempts=s.max_message_attempts,
            suppression_days=s.suppression_days,
            max_request_bytes=s.max_request_bytes,
        ),
        "registry": RegistryResource(path=str(s.registry.resolve())),
        "identity": LocalIdentityResource(
            keys_dir=str(home / "keys"),
            issuer=s.local_issuer,
            audience=s.deployment_audience,
            clock_skew_seconds=s.token_clock_skew_seconds,
        ),
        "signing": SigningResource(keys_dir=str(home / "keys"), selector=s.dkim_selector),
        "transport": SmtpResource(
            host=s.smtp_host,
            port=s.smtp_port,
            timeout_seconds=s.smtp_timeout_seconds,
            starttls=s.smtp_starttls,
            username=s.smtp_username,
            password=dg.EnvVar("NOTIFY_SMTP_PASSWORD") if s.smtp_password else "",
        ),
        "ledger": SqliteLedgerResource(path=str(home / "ledger.sqlite3")),
        "warehouse": DuckDBWarehouseResource(path=str(home / "warehouse.duckdb")),
        "inbox": LocalInboxResource(home=str(home)),
    }
