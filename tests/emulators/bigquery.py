"""bqemulator for the test session (so per xdist worker) on 127.0.0.1, from its own venv.

Started through `tools/bqemulator/launch.py` (see there for why), stopped at session end.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers import REPO

PROJECT = "notify-test"
LAUNCHER = REPO / "tools" / "bqemulator" / "launch.py"
READY_SECONDS = 60.0


@dataclass(frozen=True)
class BigQueryEmulator:
    endpoint: str
    project: str


def _python() -> Path:
    """`NOTIFY_BQEMULATOR_PYTHON`, else the venv `tools/bqemulator/requirements.txt` describes."""
    python = Path(os.environ.get("NOTIFY_BQEMULATOR_PYTHON",
                                 REPO / ".venv-bqemulator" / "bin" / "python"))
    if not python.exists():
        raise RuntimeError(f"no bqemulator venv at {python}: see tools/bqemulator/requirements.txt")
    return python


def _wait_ready(proc: subprocess.Popen[bytes], endpoint: str, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bqemulator exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/readyz", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"bqemulator not ready in {READY_SECONDS}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="notify-bq-") as tmp:
        log = Path(tmp) / "bqemulator.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(_python()), str(LAUNCHER), "--host", "127.0.0.1", "--port", str(port),
                 "--project", PROJECT],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_ready(proc, endpoint, log)
            yield BigQueryEmulator(endpoint, PROJECT)
        finally:
            _stop(proc)

