"""Shared fixtures: an isolated NOTIFY_HOME per test, the real local SMTP sink, token minting."""

from __future__ import annotations

import json
import mailbox
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.settings import Settings
from notify_pipeline.sink import MaildirSink
from tests.helpers import PROD_ACCOUNT, REGISTRY, request_dict

# Emulators for the gcp profile, each started once per test session (per xdist worker).
pytest_plugins = [
    "tests.emulators.bigquery",
    "tests.emulators.dns",
    "tests.emulators.gcs",
    "tests.emulators.moto",
    "tests.emulators.postgres",
    "tests.emulators.pubsub",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalDeployment:
    """A local-profile deployment in a temporary folder, driven the way users drive it."""

    def __init__(self, home: Path, port: int) -> None:
        self.env = {
            "NOTIFY_PROFILE": "local",
            "NOTIFY_HOME": str(home),
            "NOTIFY_REGISTRY": str(REGISTRY),
            "NOTIFY_SMTP_HOST": "127.0.0.1",
            "NOTIFY_SMTP_PORT": str(port),
            "NOTIFY_PROVIDER_RETRY_SECONDS": "0",
        }
        self.home = home
        self.port = port
        self._count = 0

    @property
    def settings(self) -> Settings:
        return Settings()

    @property
    def issuer(self) -> LocalIssuer:
        s = self.settings
        return LocalIssuer(s.keys_dir, s.local_issuer)

    def token(self, account: str = PROD_ACCOUNT, **kwargs: Any) -> str:
        kwargs.setdefault("audience", self.settings.deployment_audience)
        return self.issuer.mint(service_account=account, **kwargs)

    def enqueue(self, body: bytes | dict[str, Any], *, received_at: datetime | None = None,
                name: str | None = None) -> Path:
        """Write one request file into the inbox, optionally back-dating its receive time."""
        self._count += 1
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        path = LocalInbox(self.home).write_request(raw, name or f"req-{self._count:05d}.json")
        if received_at is not None:
            os.utime(path, (received_at.timestamp(), received_at.timestamp()))
        return path

    def request(self, **overrides: Any) -> dict[str, Any]:
        overrides.setdefault("identity_token", self.token())
        return request_dict(**overrides)

    def maildir(self) -> list[bytes]:
        box = mailbox.Maildir(self.settings.mail_dir, create=True)
        return [box.get_bytes(key) for key in box.iterkeys()]

    def events(self, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

        path = self.settings.warehouse_path
        if not path.exists():
            return []
        cols = ("event_id", "service", "message_id", "event_type", "recipient", "reason",
                "bounce_type", "provider_message_id", "subject", "tags")
        rows = DuckDBWarehouse(path).query(
            f"SELECT {', '.join(cols)} FROM notify_events.events WHERE {where}"
            " ORDER BY message_id, recipient, event_type", params)
        return [dict(zip(cols, row, strict=True)) for row in rows]


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalDeployment]:
    deployment = LocalDeployment(tmp_path / "home", free_port())
    for key, value in deployment.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("NOTIFY_CRASH_AT", raising=False)
    yield deployment


@pytest.fixture
def sink(local: LocalDeployment) -> Iterator[MaildirSink]:
    with MaildirSink(local.settings.mail_dir, host="127.0.0.1", port=local.port,
                     simulate=True) as running:
        yield running
