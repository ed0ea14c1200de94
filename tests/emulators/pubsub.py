"""The Google Cloud CLI's Pub/Sub emulator for the test session (so one per xdist worker).

`gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT --data-dir=DIR` runs a Python
launcher that starts Java; both are put in their own process group and stopped together.
Needs the `gcloud` CLI with its `pubsub-emulator` component, and Java.

Import the fixture into a test module: `from tests.emulators.pubsub import pubsub_emulator`.
Clients get the host explicitly (`PubSubEmulator.subscriber()`); to reach it through the
environment instead, set `PUBSUB_EMULATOR_HOST` to `PubSubEmulator.host` with monkeypatch (but
see `notify_pipeline.inbox.pubsub.subscriber_client` on the 4 MiB limit that path brings).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from notify_pipeline.inbox.pubsub import subscriber_client
from tests.conftest import free_port
from tests.emulators.process import answers, spawn, stop, wait_ready

PROJECT = "notify-test"
READY_SECONDS = 60.0  # the launcher and the JVM take a few seconds on a busy 2-core machine


@dataclass(frozen=True)
class PubSubEmulator:
    host: str  # 127.0.0.1:PORT, the form PUBSUB_EMULATOR_HOST takes
    project: str = PROJECT
    startup_seconds: float = 0.0

    def subscriber(self) -> SubscriberClient:
        return subscriber_client(emulator_host=self.host)

    def publisher(self) -> PublisherClient:
        return PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.host))
        )

    def new_subscription(self, *, ack_deadline_seconds: int = 10) -> tuple[str, str]:
        """A fresh topic with one pull subscription: (topic path, subscription path)."""
        name = f"notify-{uuid.uuid4().hex[:12]}"
        publisher, subscriber = self.publisher(), self.subscriber()
        try:
            topic = publisher.create_topic(name=publisher.topic_path(self.project, name),
                                           timeout=10).name
            subscription = subscriber.create_subscription(
                name=subscriber.subscription_path(self.project, name), topic=topic,
                ack_deadline_seconds=ack_deadline_seconds, timeout=10,
            ).name
        finally:
            publisher.transport.close()
            subscriber.close()
        return str(topic), str(subscription)


def _start(port: int, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    missing = [tool for tool in ("gcloud", "java") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{missing} not found: install the Google Cloud CLI with its "
                           "pubsub-emulator component (it needs Java)")
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(data_dir.parent / "gcloud-config"),  # leave the user's alone
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
    }
    return spawn(["gcloud", "beta", "emulators", "pubsub", "start",
                  f"--host-port=127.0.0.1:{port}", f"--data-dir={data_dir}"], log, env=env)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    port = free_port()
    host = f"127.0.0.1:{port}"
    root = tmp_path_factory.mktemp("pubsub")
    data_dir = root / "data"
    data_dir.mkdir()  # the emulator wants it to exist
    started = time.monotonic()
    proc = _start(port, data_dir, root / "emulator.log")
    try:
        wait_ready(proc, answers(f"http://{host}/"), what="Pub/Sub emulator",
                   log=root / "emulator.log", seconds=READY_SECONDS)
        yield PubSubEmulator(host, startup_seconds=time.monotonic() - started)
    finally:
        stop(proc)
