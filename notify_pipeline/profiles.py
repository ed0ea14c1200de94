"""The one place that maps a profile (`local`, `gcp`) to the resources a deployment runs with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from notify_pipeline.assets.resource import AnalyticsResource
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.errors import ConfigError
from notify_pipeline.resources import (
    BigQueryWarehouseResource,
    DeploymentResource,
    DuckDBWarehouseResource,
    GcsInboxResource,
    GoogleIdentityResource,
    InboxResource,
    LocalIdentityResource,
    LocalInboxResource,
    PostgresLedgerResource,
    ProviderEventsResource,
    PubSubInboxResource,
    RegistryResource,
    SesResource,
    SigningResource,
    SmtpResource,
    SqliteLedgerResource,
)
from notify_pipeline.settings import InboxKind, Profile, Settings, TransportKind


def resources_for(settings: Settings) -> dict[str, Any]:
    """Resources keyed by the names the jobs and sensors ask for."""
    if settings.profile is Profile.LOCAL:
        return _local(settings)
    return _gcp(settings)


def _common(s: Settings) -> dict[str, Any]:
    return {
        "deployment": DeploymentResource(
            domain=s.domain,
            testing_domain=s.testing_domain,
            batch_max_size=s.batch_max_size,
            batch_max_age_seconds=s.batch_max_age_seconds,
            claim_lease_seconds=s.claim_lease_seconds,
            provider_retry_seconds=s.provider_retry_seconds,
            max_message_attempts=s.max_message_attempts,
            recipient_retry_hours=s.recipient_retry_hours,
            suppression_days=s.suppression_days,
            max_request_bytes=s.max_request_bytes,
            worker_poll_seconds=s.worker_poll_seconds,
            worker_max_seconds=s.worker_max_seconds,
            delivery_workers=s.delivery_workers,
            run_retention_days=s.run_retention_days,
            via_ses=s.sends_via_ses,
            limit_per_minute=s.limit_per_minute,
            limit_per_day=s.limit_per_day,
            warmup_schedule=list(s.warmup_schedule),
        ),
        "registry": RegistryResource(path=_path(s.registry)),
        "signing": SigningResource(keys_dir=_path(s.keys_dir), selector=s.dkim_selector,
                                   key_source=s.dkim_key_source, selectors=s.dkim_selectors,
                                   dns_nameservers=list(s.dns_nameservers),
                                   domain_check_seconds=s.domain_check_seconds),
        "analytics": AnalyticsResource(home=_path(s.home), export_days=s.export_days,
                                       apply_access=s.profile is Profile.GCP,
                                       sheets_folder_id=s.sheets_folder_id),
    }


def _local(s: Settings) -> dict[str, Any]:
    return {
        **_common(s),
        "identity": LocalIdentityResource(
            keys_dir=_path(s.keys_dir),
            issuer=s.local_issuer,
            audience=s.deployment_audience,
            clock_skew_seconds=s.token_clock_skew_seconds,
        ),
        "transport": _smtp(s),
        "ledger": SqliteLedgerResource(path=_path(s.ledger_path)),
        "warehouse": DuckDBWarehouseResource(path=_path(s.warehouse_path)),
        "inbox": LocalInboxResource(home=_path(s.home)),
    }


def _smtp(s: Settings) -> SmtpResource:
    return SmtpResource(
        host=s.smtp_host,
        port=s.smtp_port,
        timeout_seconds=s.smtp_timeout_seconds,
        starttls=s.smtp_starttls,
        username=s.smtp_username,
        password=dg.EnvVar("NOTIFY_SMTP_PASSWORD") if s.smtp_password else "",
        connections=s.smtp_connections,
    )


def _gcp(s: Settings) -> dict[str, Any]:
    """Production: GCS or Pub/Sub inbox, Google ID tokens, SES or SMTP, Postgres, BigQuery."""
    project = _required(s.gcp_project, "NOTIFY_GCP_PROJECT")
    _required(s.ledger_dsn.get_secret_value(), "NOTIFY_LEDGER_DSN")
    resources: dict[str, Any] = {
        **_common(s),
        "identity": GoogleIdentityResource(
            certs_url=s.token_certs_url,
            issuers=list(s.token_issuers),
            audience=s.deployment_audience,
            clock_skew_seconds=s.token_clock_skew_seconds,
        ),
        "inbox": _gcp_inbox(s, project),
        "ledger": PostgresLedgerResource(
            dsn=dg.EnvVar("NOTIFY_LEDGER_DSN"), ledger_schema=s.ledger_schema
        ),
        "warehouse": BigQueryWarehouseResource(
            bigquery=EmulatorAwareBigQueryResource(
                project=s.bigquery_project or project,
                location=s.bigquery_location,
                endpoint=s.bigquery_endpoint or None,
            ),
            dataset=s.bigquery_dataset,
        ),
    }
    if s.transport is TransportKind.SMTP:
        resources["transport"] = _smtp(s)
        return resources
    resources["transport"] = SesResource(
        region=s.ses_region,
        configuration_set=s.ses_configuration_set,
        max_send_rate=s.ses_max_send_rate,
        concurrency=s.ses_concurrency,
    )
    if s.ses_events_queue_url:
        resources["provider_events"] = ProviderEventsResource(
            region=s.ses_region,
            queue_url=s.ses_events_queue_url,
            topic_arns=list(_required_list(s.sns_topic_arns, "NOTIFY_SNS_TOPIC_ARNS")),
            regions=list(s.sns_regions or (s.ses_region,)),
            endpoint_url=s.aws_endpoint_url,
            cert_base_url=s.sns_cert_base_url,
        )
    return resources


def _gcp_inbox(s: Settings, project: str) -> InboxResource:
    bucket = _required(s.gcs_bucket, "NOTIFY_GCS_BUCKET")
    if s.inbox is InboxKind.PUBSUB:
        return PubSubInboxResource(
            project=project,
            subscription=_required(s.pubsub_subscription, "NOTIFY_PUBSUB_SUBSCRIPTION"),
            staging_bucket=bucket,
            pubsub_emulator_host=s.pubsub_emulator_host,
            storage_emulator_host=s.storage_emulator_host,
            max_request_bytes=s.max_request_bytes,
        )
    return GcsInboxResource(
        project=project,
        bucket=bucket,
        inbox_prefix=s.gcs_inbox_prefix,
        storage_emulator_host=s.storage_emulator_host,
        max_request_bytes=s.max_request_bytes,
    )


def _path(path: Path) -> str:
    """Absolute, so runs started from another working directory find the same files."""
    return str(path.resolve())


def _required(value: str, setting: str) -> str:
    if not value:
        raise ConfigError(setting, "is required by the gcp profile")
    return value


def _required_list(value: tuple[str, ...], setting: str) -> tuple[str, ...]:
    if not value:
        raise ConfigError(setting, "must list at least one value when SES events are read")
    return value
