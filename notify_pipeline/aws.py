"""boto3 clients, built one way for every AWS service we call (SES, SQS).

Each client gets a session of its own, so credentials come from boto3's own chain, resolved when
the client is built (not cached from an earlier client), and never from us. `endpoint_url` None
lets boto3 honour `AWS_ENDPOINT_URL` (a local stand-in in tests).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def client(
    service: str,
    *,
    region: str,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    max_pool_connections: int = 10,
    endpoint_url: str | None = None,
) -> Any:
    """A `service` client with explicit timeouts and at most `max_attempts` tries per call.

    `max_attempts=1` switches botocore's retries off, for callers whose own classification of a
    failure must be the only retry policy.
    """
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint_url, config=config
    )
