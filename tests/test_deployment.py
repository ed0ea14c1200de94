"""The production deployment: deploy/dagster.yaml loaded by Dagster itself against a real
Postgres, the Helm values in the shape Dagster's chart reads, and two delivery workers kept going
by the real `dagster-daemon` (beside `dagster-webserver`) over one GCS inbox and one Postgres
ledger, one of them SIGKILLed half-way.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from benchmarks.harness import session_members
from notify_pipeline.jobs import OWNER_TAG, SLOT_TAG
from tests.conftest import free_port
from tests.helpers import REPO
from tests.test_gcp_e2e import gcp  # noqa: F401  (the gcp profile's stand-ins, as a fixture)
from tests.test_up import FINISHED, batch_lines, ui_ready

DEPLOY = REPO / "deploy"
# The timeouts below are generous: on a 2-core machine whose load average stood near 20 (other
# work) this test took eight to thirteen minutes; most of it is the machine's, not the test's.


def dagster_env(postgres_dsn: str, database: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for `database` on the cluster."""
    info = conninfo_to_dict(postgres_dsn)
    return {"DAGSTER_PG_HOST": str(info["host"]), "DAGSTER_PG_PORT": str(info["port"]),
            "DAGSTER_PG_DB": database, "DAGSTER_PG_USERNAME": str(info["user"]),
            "DAGSTER_PG_PASSWORD": str(info["password"])}


@pytest.fixture
def dagster_home(tmp_path: Path, postgres_dsn: str,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME holding deploy/dagster.yaml, its storage a fresh database."""
    database = f"dagster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    for key, value in dagster_env(postgres_dsn, database).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))


# --- the configuration files ---------------------------------------------------------------------


def test_deploy_dagster_yaml_is_a_postgres_instance_with_queued_limited_monitored_runs(
        dagster_home):
    with dg.DagsterInstance.get() as instance:
        storage = type(instance.run_storage).__name__
        coordinator = instance.run_coordinator
        limits = coordinator.get_run_queue_config().tag_concurrency_limits  # type: ignore[attr-defined]
        monitoring = instance.run_monitoring_enabled
        telemetry = instance.telemetry_enabled
        instance.add_run(dg.DagsterRun(job_name="probe"))  # the schema is really there
        runs = instance.get_runs_count()
    assert storage == "PostgresRunStorage"
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    assert {"key": "notify/kind", "value": "worker", "limit": 2} in limits
    assert monitoring and not telemetry
    assert runs == 1
    assert os.environ["DAGSTER_PG_PASSWORD"] not in (dagster_home / "dagster.yaml").read_text()


def test_helm_values_set_what_dagsters_chart_reads():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {"name": "notify-secrets"} in launcher["envSecrets"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    limits = coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    workers = next(limit for limit in limits if limit["key"] == "notify/kind"
                   and limit["value"] == "worker")
    code = values["dagster-user-deployments"]["deployments"][0]
    env = {item["name"]: item["value"] for item in code["env"]}
    assert workers["limit"] == int(env["NOTIFY_DELIVERY_WORKERS"])
    assert code["dagsterApiGrpcArgs"] == ["--module-name", "notify_pipeline.definitions"]
    assert code["includeConfigInLaunchedRuns"]["enabled"]
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert values["postgresql"]["enabled"] is False
    assert values["telemetry"]["enabled"] is False
    assert values["retention"]["enabled"]
    assert "postgresqlPassword" not in json.dumps(values), "the password stays in its Secret"


# --- two workers under the daemon ----------------------------------------------------------------

MESSAGES = 1000
RATE = 80  # SES MaxSendRate, shared by both workers through the ledger
PREFIX = "w2-"


@dataclass
class Daemon:
    """`dagster-daemon` and `dagster-webserver` on deploy/dagster.yaml, each in a session."""

    procs: list[subprocess.Popen[bytes]]
    ui_port: int

    def stop(self) -> None:
        for proc in self.procs:
            with_group = session_members(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            for pid in [*with_group, *session_members(proc.pid)]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_daemon(tmp_path: Path) -> Daemon:
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    bin_dir = Path(sys.executable).parent
    port = free_port()
    commands = [[str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                 "-p", str(port)]]
    procs = []
    for name, command in zip(("daemon", "webserver"), commands, strict=True):
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    return Daemon(procs, port)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def started_workers(instance: dg.DagsterInstance) -> dict[int, dg.DagsterRun]:
    """Started delivery_worker runs that have told the sensors who they are, by slot."""
    runs = instance.get_runs(dg.RunsFilter(job_name="delivery_worker",
                                           statuses=[dg.DagsterRunStatus.STARTED]))
    return {int(r.tags[SLOT_TAG]): r for r in runs if OWNER_TAG in r.tags}


def sent_ids(deployment: Any) -> Counter[str]:
    """Request ids (the subjects) of what SES was handed, with counts."""
    subjects = (str(email.message_from_string(m["raw_data"], policy=email.policy.default)
                    ["Subject"]) for m in deployment.sent())
    return Counter(s for s in subjects if s.startswith(PREFIX))


def ledger_states(dsn: str, schema: str) -> dict[str, str]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(sql.SQL("SELECT message_id, state FROM {}.messages WHERE"
                                    " message_id LIKE %s").format(sql.Identifier(schema)),
                            (f"{PREFIX}%",)).fetchall()
    return dict(rows)


def sent_span_seconds(dsn: str, schema: str) -> float:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        (span,) = conn.execute(sql.SQL(
            "SELECT extract(epoch FROM max(updated_at) - min(updated_at)) FROM {}.messages"
            " WHERE state = 'sent' AND message_id LIKE %s").format(sql.Identifier(schema)),
            (f"{PREFIX}%",)).fetchone()
    return float(span)


def mid_batch(dsn: str, schema: str, owner: str) -> bool:
    """Whether `owner` holds a batch lease and not the staging turn: it is delivering a batch.

    A stager killed half-way leaves its GCS batch hidden until the batch is stale (minutes);
    nothing is lost, but the test would wait for it. A worker stages only between batches, so
    one seen in a batch stays there for a while.
    """
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT batch_id LIKE 'staging-turn.%%' FROM {}.batches WHERE owner = %s"
            " AND lease_expires_at > now()").format(sql.Identifier(schema)), (owner,)).fetchall()
    turns = [turn for (turn,) in rows]
    return False in turns and True not in turns


@pytest.mark.slow
def test_two_workers_under_the_daemon_share_the_inbox_and_a_killed_one_loses_nothing(
        gcp, dagster_home, tmp_path, monkeypatch, postgres_dsn):  # noqa: F811
    monkeypatch.setenv("NOTIFY_DELIVERY_WORKERS", "2")
    monkeypatch.setenv("NOTIFY_INBOX", "gcs")
    monkeypatch.setenv("NOTIFY_BATCH_MAX_SIZE", "50")
    monkeypatch.setenv("NOTIFY_BATCH_MAX_AGE_SECONDS", "0.5")
    monkeypatch.setenv("NOTIFY_SES_MAX_SEND_RATE", str(RATE))
    schema = os.environ["NOTIFY_LEDGER_SCHEMA"]
    daemon = start_daemon(tmp_path)
    instance = None
    try:
        wait_for(lambda: ui_ready(daemon.ui_port), 180, "the Dagster UI")
        instance = dg.DagsterInstance.get()
        wait_for(lambda: len(started_workers(instance)) == 2, 300, "two started workers")
        workers = started_workers(instance)
        assert {r.tags["dagster/run_key"] for r in workers.values()} == {
            "worker.0.0", "worker.1.0"}, "one sensor tick filled both slots"

        token = gcp.token()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: gcp.upload(gcp.request(
                id=f"{PREFIX}{n:05d}", subject=f"{PREFIX}{n:05d}", identity_token=token),
                name=f"{PREFIX}{n:05d}"), range(MESSAGES)))

        victim = workers[1]
        victim_owner = victim.tags[OWNER_TAG]
        wait_for(lambda: sum(sent_ids(gcp).values()) >= MESSAGES // 4
                 and batch_lines(instance, victim.run_id)["delivered"] > 0, 600,
                 "a quarter sent, some of it by the victim")
        wait_for(lambda: mid_batch(postgres_dsn, schema, victim_owner), 120,
                 "the victim in the middle of a batch")
        os.kill(int(victim_owner.split("|")[1]), signal.SIGKILL)
        killed_at = sum(sent_ids(gcp).values())

        def replaced() -> bool:
            slot = started_workers(instance).get(1)
            return slot is not None and slot.run_id != victim.run_id

        wait_for(replaced, 300, "slot 1 refilled")
        wait_for(lambda: len(ledger_states(postgres_dsn, schema)) == MESSAGES
                 and not {"claimed", "handing_off"} & set(
                     ledger_states(postgres_dsn, schema).values()), 900,
                 "every message settled")
        states = Counter(ledger_states(postgres_dsn, schema).values())
        sent = sent_ids(gcp)
        victim_after = instance.get_run_by_id(victim.run_id)
        refill = started_workers(instance)[1]
        survivor_lines = batch_lines(instance, workers[0].run_id)
        victim_lines = batch_lines(instance, victim.run_id)
        span = sent_span_seconds(postgres_dsn, schema)
    finally:
        daemon.stop()
        if instance is not None:
            instance.dispose()

    assert killed_at < MESSAGES, "the worker was killed half-way"
    assert max(sent.values()) == 1, "SES was never handed a message twice"
    assert states["sent"] + states["ambiguous"] == MESSAGES, states
    assert states["ambiguous"] <= 2 * int(os.environ.get("NOTIFY_SES_CONCURRENCY", "8")), (
        "only the victim's hand-offs in flight are ambiguous")
    ambiguous = {m for m, s in ledger_states(postgres_dsn, schema).items() if s == "ambiguous"}
    assert set(sent) | ambiguous == {f"{PREFIX}{n:05d}" for n in range(MESSAGES)}, (
        "every message sent, or ambiguous because the victim died handing it off")
    assert victim_after is not None and victim_after.status in FINISHED
    assert victim_after.status is not dg.DagsterRunStatus.SUCCESS
    assert refill.tags["dagster/run_key"] == "worker.1.1"
    assert survivor_lines["delivered"] > 0 and victim_lines["delivered"] > 0, (
        "both workers delivered before the kill")
    assert span >= (MESSAGES - RATE) / RATE * 0.9, (
        f"two workers together kept to the shared {RATE}/s ({span:.1f} s)")
