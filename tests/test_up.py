"""`notify up`, the local profile's main job: the SMTP sink plus `dagster dev`, daemon and all.

This is the path users run: the real sensor daemon keeps a `delivery_worker` run going, which
stages the inbox and delivers; terminating it from the UI makes the sensor start the next one,
and stopping `notify up` stops every process it started. It takes a minute or two, so it runs
once with several requests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

import dagster as dg
import pytest

from benchmarks.harness import session_members
from notify_pipeline.jobs import OWNER_TAG
from notify_pipeline.sensors.worker import ACTIVE_STATUSES
from tests.conftest import free_port
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def start_up(local, log: IO[bytes], **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """`notify up` for `local` on a free UI port, in a session of its own, output to `log`."""
    ui_port = free_port()
    environment = {**os.environ, **local.env, **env,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "notify_pipeline.cli", "up", "--port",
                             str(ui_port)], cwd=REPO, env=environment, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, ui_port


def ui_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_notify_up_delivers_through_the_worker_run_and_stops_everything_on_sigterm(local,
                                                                                 tmp_path):
    log = (tmp_path / "up.log").open("wb")
    proc, ui_port = start_up(local, log)
    instance = None
    try:
        wait_for(lambda: ui_ready(ui_port), 120, "the Dagster UI")
        instance = dg.DagsterInstance.from_config(str(local.home / "dagster"))
        first = started_worker(instance, 180)
        local.enqueue(local.request(id="up-1"))
        local.enqueue(local.request(id="up-2", cc=["carol@example.org"]))
        local.enqueue(local.request(id="up-3", service="nobody"))
        wait_for(lambda: len(local.maildir()) == 2 and len(local.events("event_type = 'reject'"))
                 == 1, 60, "two deliveries and one reject")
        wait_for(lambda: len(local.events("event_type = 'delivery'")) == 3, 60, "events")
        assert batch_lines(instance, first.run_id) == {"delivered": 2, "requests": 3}
        assert not instance.get_runs(dg.RunsFilter(job_name="deliver_batch")), (
            "the inbox sensor left the inbox to the worker")

        # Terminate the worker as the UI's Terminate button does; the sensor starts the next.
        assert instance.run_coordinator.cancel_run(first.run_id)
        wait_for(lambda: status_of(instance, first.run_id) in FINISHED, 30,
                 "the terminated worker run to end")
        assert status_of(instance, first.run_id) is dg.DagsterRunStatus.CANCELED
        assert not tracebacks(instance, first.run_id), "terminated cleanly, no stack traces"
        assert step_failures(instance, first.run_id) == [
            "Terminated on request. The batch in hand was finished first; nothing was lost."]
        second = started_worker(instance, 180)
        assert second.run_id != first.run_id
        assert second.tags["dagster/sensor_name"] == "delivery_worker_sensor"
        assert second.tags["dagster/run_key"] == "worker.0.1"
        local.enqueue(local.request(id="up-4"))
        wait_for(lambda: len(local.maildir()) == 3, 60, "the next worker's delivery")
        wait_for(lambda: batch_lines(instance, second.run_id)["delivered"] == 1, 30,
                 "the next worker's batch log line")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0 or proc.returncode in (-signal.SIGTERM, 130)
        assert not session_members(proc.pid), "notify up returned with processes still running"
        unfinished = instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE_STATUSES)))
        assert not unfinished, "no run is left queued or in progress"
        assert status_of(instance, second.run_id) is dg.DagsterRunStatus.SUCCESS, (
            "stopping notify up is a planned stop")
        assert not tracebacks(instance, second.run_id)
        assert not step_failures(instance, second.run_id)
    finally:
        for pid in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if instance is not None:
            instance.dispose()
        log.close()
    assert {r["message_id"] for r in local.events("event_type = 'delivery'")} == {
        "up-1", "up-2", "up-4"}


FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED)


def started_worker(instance: dg.DagsterInstance, timeout: float) -> dg.DagsterRun:
    """Wait for a delivery_worker run that is STARTED and has told the sensors who it is."""
    found: list[dg.DagsterRun] = []

    def ready() -> bool:
        found[:] = [r for r in instance.get_runs(dg.RunsFilter(
            job_name="delivery_worker", statuses=[dg.DagsterRunStatus.STARTED]))
            if OWNER_TAG in r.tags]
        return bool(found)

    wait_for(ready, timeout, "a started delivery_worker run")
    assert len(found) == 1, "exactly one worker"
    return found[0]


def status_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def tracebacks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Errors in the run's log that an operator would read as a crash: any with a stack trace, a
    cause, or an interrupt raised in the middle of the work."""
    found = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None and (error.stack or error.cause or "Interrupt" in error.cls_name
                                  or "interrupted" in error.message):
            found.append(error.to_string())
    return found


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The messages of the run's step failures."""
    return [entry.dagster_event.event_specific_data.error.message
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]


def batch_lines(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """Requests and deliveries summed over the run's one-line-per-batch log messages
    (`batch B: 3 request(s): 2 delivered, 1 rejected (...)`)."""
    totals = {"delivered": 0, "requests": 0}
    for entry in instance.all_logs(run_id):
        requests = re.search(r"^batch .*: (\d+) request", entry.user_message)
        if requests:  # not "batch B is held by another live run; skipped"
            line = entry.user_message
            totals["requests"] += int(requests.group(1))
            delivered = re.search(r"(\d+) delivered", line)
            totals["delivered"] += int(delivered.group(1)) if delivered else 0
    return totals
