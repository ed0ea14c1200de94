"""Dagster resources: what they keep from one sensor tick to the next.

Dagster builds a new resource object for every tick, so anything a resource means to keep (the
SES event intake's SQS client, its SNS verifier and that verifier's certificate cache) must
outlive the object. These tests run the real sensor tick after tick against moto.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg

from notify_pipeline.delivery.ses import SendRateLimiter, SesTransport
from notify_pipeline.delivery.shared_rate import SharedSendRate
from notify_pipeline.jobs import build_pipeline
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.profiles import resources_for
from notify_pipeline.resources import (
    DeploymentResource,
    ProviderEventsResource,
    SesResource,
    SqliteLedgerResource,
)
from notify_pipeline.sensors.provider_events import provider_events_sensor
from notify_pipeline.settings import Settings
from tests.emulators.moto import REGION, MotoServer, SnsCertServer, TestSigner
from tests.helpers import ses_event


def events_resource(moto: MotoServer, certs: SnsCertServer, topic: str,
                    queue: str) -> ProviderEventsResource:
    return ProviderEventsResource(region=REGION, queue_url=queue, topic_arns=[topic],
                                  regions=[REGION], endpoint_url=moto.endpoint,
                                  cert_base_url=certs.base_url, wait_seconds=0)


def test_the_certificate_is_fetched_once_across_sensor_ticks(
    aws_env: MotoServer, sns_certs: SnsCertServer, sns_signer: TestSigner, tmp_path: Path
) -> None:
    topic, queue = aws_env.queue_for_topic(f"ses-events-{uuid.uuid4().hex[:8]}")
    resources = {
        "deployment": DeploymentResource(),
        "ledger": SqliteLedgerResource(path=str(tmp_path / "ledger.sqlite3")),
        "provider_events": events_resource(aws_env, sns_certs, topic, queue),
    }
    sqs = aws_env.client("sqs")
    fetched_before = len(sns_certs.requests)
    for tick in range(3):
        envelope = sns_signer.envelope(json.dumps(ses_event("delivery", ses_id=f"ses-{tick}")),
                                       topic_arn=topic)
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(envelope))
        with dg.build_sensor_context(resources=resources) as context:
            result = provider_events_sensor(context)
        assert isinstance(result, dg.SensorResult)  # the tick verified and took its event in
        assert result.run_requests and result.run_requests[0].run_key == "provider-events-1"

    assert len(sns_certs.requests) == fetched_before + 1


def test_equal_configurations_share_one_client_and_verifier(
    aws_env: MotoServer, sns_certs: SnsCertServer, tmp_path: Path
) -> None:
    topic, queue = aws_env.queue_for_topic(f"ses-events-{uuid.uuid4().hex[:8]}")
    ledger = SqliteLedgerResource(path=str(tmp_path / "ledger.sqlite3")).open()
    suppress_for = DeploymentResource().suppress_for
    try:
        first, second = (events_resource(aws_env, sns_certs, topic, queue).source(
            ledger, suppress_for) for _ in range(2))
        other = ProviderEventsResource(region=REGION, queue_url=queue, topic_arns=[topic],
                                       regions=[REGION], endpoint_url=aws_env.endpoint,
                                       wait_seconds=1).source(ledger, suppress_for)
    finally:
        ledger.close()

    assert first.client is second.client
    assert first.verifier is second.verifier
    assert other.client is not first.client  # another long-poll wait needs another timeout
    assert other.verifier is not first.verifier  # certificates from elsewhere


def test_a_runs_ses_transport_shares_the_send_rate_through_its_ledger(tmp_path: Path) -> None:
    """What `deliver_batch` and the delivery worker build: the run's ledger holds the bucket."""
    resource = SesResource(region=REGION, max_send_rate=25.0)
    book = SqliteLedger(tmp_path / "ledger.sqlite3")
    try:
        shared = resource.transport(book)
        assert isinstance(shared, SesTransport) and isinstance(shared.limiter, SharedSendRate)
        assert (shared.limiter.bucket, shared.limiter.rate) == (f"ses:{REGION}", 25.0)
        alone = resource.transport()
        assert isinstance(alone, SesTransport) and isinstance(alone.limiter, SendRateLimiter)
    finally:
        book.close()


def test_the_recipient_retry_window_reaches_the_pipeline_from_its_variable(local, monkeypatch):
    """NOTIFY_RECIPIENT_RETRY_HOURS is how long greylisted or otherwise deferred recipients
    are retried; a run's pipeline must carry the operator's value, not the default."""
    monkeypatch.setenv("NOTIFY_RECIPIENT_RETRY_HOURS", "2.5")
    with dg.build_resources(resources_for(Settings())) as r:
        book = r.ledger.open()
        try:
            pipeline = build_pipeline(book, r.deployment, r.registry, r.identity, r.signing,
                                      r.transport)
        finally:
            book.close()
    assert pipeline.recipient_retry_for == timedelta(hours=2.5)
