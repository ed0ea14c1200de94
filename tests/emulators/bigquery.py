"""bqemulator for the test session (so per xdist worker) on 127.0.0.1, from its own venv.

Started through `tools/bqemulator/launch.py` (see there for why), stopped at session end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.emulators.process import answers, spawn, stop, wait_ready
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


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="notify-bq-") as tmp:
        log = Path(tmp) / "bqemulator.log"
        proc = spawn([str(_python()), str(LAUNCHER), "--host", "127.0.0.1", "--port", str(port),
                      "--project", PROJECT], log)
        try:
            wait_ready(proc, answers(f"{endpoint}/readyz"), what="bqemulator", log=log,
                       seconds=READY_SECONDS, interval=0.1)
            yield BigQueryEmulator(endpoint, PROJECT)
        finally:
            stop(proc)

