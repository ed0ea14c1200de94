"""`notify up`, the local profile's main job: the SMTP sink plus `dagster dev`, daemon and all.

This is the path users run: the real sensor daemon stages the inbox and launches `deliver_batch`
runs in their own processes. It takes tens of seconds, so it runs once with several requests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def ui_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_notify_up_delivers_through_the_sensor_daemon_and_stops_on_sigterm(local, tmp_path):
    ui_port = free_port()
    env = {**os.environ, **local.env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "notify_pipeline.cli", "up", "--port",
                             str(ui_port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: ui_ready(ui_port), 120, "the Dagster UI")
        local.enqueue(local.request(id="up-1"))
        local.enqueue(local.request(id="up-2", cc=["carol@example.org"]))
        local.enqueue(local.request(id="up-3", service="nobody"))
        wait_for(lambda: len(local.maildir()) == 2 and len(local.events("event_type = 'reject'"))
                 == 1, 180, "two deliveries and one reject")
        wait_for(lambda: len(local.events("event_type = 'delivery'")) == 3, 60, "events")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0 or proc.returncode in (-signal.SIGTERM, 130)
        wait_for(lambda: not _group_alive(proc.pid), 60, "dagster dev and its children to stop")
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert {r["message_id"] for r in local.events("event_type = 'delivery'")} == {"up-1", "up-2"}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
