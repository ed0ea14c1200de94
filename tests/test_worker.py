"""The delivery worker: the plain loop, its Dagster job, its sensor, and the inbox sensor beside it.

Real sink, ledger, warehouse and Dagster instance throughout; a second owner is a real second
loop (or a lease taken in the ledger), and a failing batch is a real exception from the inbox.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from notify_pipeline.cli import process_once
from notify_pipeline.definitions import build_definitions
from notify_pipeline.delivery.process_pool import ProcessTransportPool
from notify_pipeline.events import utcnow
from notify_pipeline.inbox.base import InboxItem
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.jobs import ENDS_AT_TAG, OWNER_TAG, SLOT_TAG, build_pipeline, delivery_worker
from notify_pipeline.ledger.base import Ledger, current_owner
from notify_pipeline.profiles import resources_for
from notify_pipeline.resources import DeploymentResource
from notify_pipeline.run import Totals, flush_events, run_worker, stage_batches
from notify_pipeline.run.worker import in_turn, staging_turn
from notify_pipeline.sensors.inbox import inbox_sensor
from notify_pipeline.sensors.worker import (
    ACTIVE_STATUSES,
    HANDOVER_SECONDS,
    delivery_worker_sensor,
)
from tests.helpers import REGISTRY, REPO

FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def worker_parts(local, **overrides: Any) -> Iterator[dict[str, Any]]:
    """run_worker's arguments built from the deployment's own resources, as the job builds them."""
    settings = local.settings.model_copy(update={"batch_max_age_seconds": 0.0, **overrides})
    with dg.build_resources(resources_for(settings)) as r:
        yield {
            "inbox": r.inbox.open(),
            "open_ledger": r.ledger.open,
            "make_pipeline": lambda book: build_pipeline(
                book, r.deployment, r.registry, r.identity, r.signing, r.transport),
            "warehouse": r.warehouse.open(),
            "max_items": settings.batch_max_size,
            "max_age_seconds": 0.0,
            "current_registry": r.registry.load,
        }


def delivered_ids(local) -> Counter[str]:
    """Message ids (the `msg-N` of `(service, id)`) as they arrived at the sink, with counts."""
    return Counter(
        str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
        for raw in local.maildir()
    )



def before_each_handoff(pipeline: Any, hook: Callable[[], None]) -> None:
    """Call `hook` as each hand-off begins, in the run's process: `start` of the process pool
    the SMTP resource gives for several connections, else the transport's own `send`."""
    transport = pipeline.transport
    name = "start" if isinstance(transport, ProcessTransportPool) else "send"
    begin = getattr(transport, name)

    def hooked(message: Any) -> Any:
        hook()
        return begin(message)

    setattr(transport, name, hooked)


def enqueue(local, *ids: str) -> None:
    for message_id in ids:
        local.enqueue(local.request(id=message_id, subject=message_id))


class BackgroundWorker:
    """run_worker in a thread, for tests that feed it while it runs."""

    def __init__(self, parts: dict[str, Any], owner: str, **kwargs: Any) -> None:
        self.stop = threading.Event()
        self.totals: Totals | None = None
        self.batches: list[dict[str, Any]] = []
        kwargs.setdefault("on_batch", lambda summary: self.batches.append(summary.as_dict()))
        self._thread = threading.Thread(target=self._run, args=(parts, owner, kwargs))
        self._thread.start()

    def _run(self, parts: dict[str, Any], owner: str, kwargs: dict[str, Any]) -> None:
        self.totals = run_worker(**parts, owner=owner, stop=self.stop, **kwargs)

    def join(self) -> Totals:
        self.stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the loop did not stop"
        assert self.totals is not None
        return self.totals


# --- the loop ------------------------------------------------------------------------------------


def test_loop_delivers_each_request_once_as_it_arrives(local, sink):
    with worker_parts(local) as parts:
        loop = BackgroundWorker(parts, current_owner("loop"), poll_seconds=0.05,
                                max_seconds=120)
        enqueue(local, "m1", "m2", "m3")
        wait_for(lambda: len(local.maildir()) == 3, 30, "the first three")
        enqueue(local, "m4", "m5")
        wait_for(lambda: len(local.maildir()) == 5, 30, "the next two")
        totals = loop.join()
    assert delivered_ids(local) == Counter({f"m{n}": 1 for n in range(1, 6)})
    assert totals.delivered == 5 and totals.requests == 5 and totals.errors == 0
    assert totals.batches >= 2, "requests enqueued later went into later batches"
    assert totals.events == len(local.events()) > 0, "the loop flushed its events"
    assert sorted(r["message_id"] for r in local.events("event_type = 'delivery'")) == [
        f"m{n}" for n in range(1, 6)]
    assert not LocalInbox(local.home).batches(), "nothing left staged"


def test_an_idle_worker_sends_a_lone_request_without_waiting_for_the_age_bound(local, sink):
    """The age bound gathers requests that arrive while batches run; one reaching an idle
    worker goes at its next poll. With an age bound of an hour it would wait an hour."""
    with worker_parts(local) as parts:
        parts["max_age_seconds"] = 3600.0
        loop = BackgroundWorker(parts, current_owner("idle"), poll_seconds=0.05,
                                max_seconds=120)
        time.sleep(0.3)  # a few passes that find nothing
        enqueue(local, "lone")
        wait_for(lambda: len(local.maildir()) == 1, 30, "the lone request")
        enqueue(local, "second")
        wait_for(lambda: len(local.maildir()) == 2, 30, "the next lone request")
        totals = loop.join()
    assert delivered_ids(local) == Counter({"lone": 1, "second": 1})
    assert totals.batches == 2 and totals.errors == 0


def test_a_service_registered_while_the_loop_runs_is_served_and_a_broken_change_is_not(
        local, sink, tmp_path, caplog):
    from tests.test_registry_watch import MY_APP

    folder = tmp_path / "registry"
    shutil.copytree(REGISTRY, folder)
    account = "my-app@my-project.iam.gserviceaccount.com"
    with worker_parts(local, registry=folder) as parts, caplog.at_level(logging.INFO):
        loop = BackgroundWorker(parts, current_owner("loop"), poll_seconds=0.05,
                                max_seconds=120)
        enqueue(local, "m1")
        wait_for(lambda: len(local.maildir()) == 1, 30, "the first")
        (folder / "my-app.yaml").write_text(MY_APP)
        wait_for(lambda: "registry_watch" in caplog.text, 10, "the reload")
        local.enqueue(local.request(id="new", subject="new", service="my-app",
                                    identity_token=local.token(account)))
        wait_for(lambda: len(local.maildir()) == 2, 30, "the new service's message")
        (folder / "hr-reminders.yaml").write_text("id: hr-reminders\n")
        wait_for(lambda: "does not load" in caplog.text, 10, "the broken change's warning")
        local.enqueue(local.request(id="new2", subject="new2", service="my-app",
                                    identity_token=local.token(account)))
        wait_for(lambda: len(local.maildir()) == 3, 30, "a message under the last good one")
        totals = loop.join()
    assert totals.delivered == 3 and not totals.rejected
    assert caplog.text.count("does not load") == 1
    assert "hr-reminders.yaml" in caplog.text


def test_loop_returns_after_max_seconds(local, sink):
    enqueue(local, "m1")
    with worker_parts(local) as parts:
        started = time.monotonic()
        totals = run_worker(**parts, owner=current_owner("timed"), poll_seconds=0.05,
                            max_seconds=1.0)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 10, elapsed
    assert totals.delivered == 1


def test_stop_finishes_the_batch_in_hand_and_runs_no_other(local, sink):
    enqueue(local, "m1", "m2", "m3", "m4")
    with worker_parts(local, batch_max_size=2) as parts:
        inbox = parts["inbox"]
        stop = threading.Event()
        make = parts["make_pipeline"]

        def stopping_pipeline(book: Ledger) -> Any:
            pipeline = make(book)
            before_each_handoff(pipeline, stop.set)  # as if asked to end during the first
            return pipeline

        totals = run_worker(**{**parts, "make_pipeline": stopping_pipeline},
                            owner=current_owner("stopping"), poll_seconds=0.05,
                            max_seconds=60, stop=stop)
        left = [len(list(inbox.read(b))) for b in inbox.batches()]
    assert totals.batches == 1 and totals.delivered == 2, "the first batch finished whole"
    assert left == [2], "the second batch was left staged for the next owner"
    assert sum(delivered_ids(local).values()) == 2
    sent = {e["message_id"] for e in local.events("event_type = 'send'")}
    assert len(sent) == 2 and totals.events == len(local.events()), "its events were flushed"


def test_an_interrupt_mid_batch_ends_the_loop_and_releases_the_batch_lease(local, sink):
    """What terminating the run does: Dagster raises an interrupt wherever the loop is."""
    enqueue(local, "m1", "m2")
    with worker_parts(local) as parts:
        make = parts["make_pipeline"]

        def interrupted_pipeline(book: Ledger) -> Any:
            pipeline = make(book)

            def interrupt() -> None:
                raise KeyboardInterrupt

            before_each_handoff(pipeline, interrupt)
            return pipeline

        with pytest.raises(KeyboardInterrupt):
            run_worker(**{**parts, "make_pipeline": interrupted_pipeline},
                       owner=_dead_owner("terminated"), poll_seconds=0.05, max_seconds=60)
        inbox = parts["inbox"]
        [batch] = inbox.batches()
        book = parts["open_ledger"]()
        try:
            status = book.batch_status(batch, now=utcnow())
        finally:
            book.close()
        again = run_worker(**parts, owner=current_owner("next"), poll_seconds=0.05,
                           max_seconds=1.0)
    assert status.ready and status.attempts == 1, "released, not held until the lease expires"
    # Messages in hand were marked handing off before the interrupt: ambiguous, never resent;
    # any only claimed by the run that is gone are delivered by the next owner.
    assert again.batches == 1 and again.ambiguous >= 1
    assert again.ambiguous + again.delivered == 2
    assert sum(delivered_ids(local).values()) == again.delivered


def _dead_owner(run_id: str) -> str:
    """An owner id naming this pid with another start time: a process that has exited."""
    pid = os.getpid()
    return current_owner(run_id).replace(f"|{pid}|", f"|{pid}|x", 1)


# --- two owners ----------------------------------------------------------------------------------


def test_a_batch_held_by_another_live_owner_is_left_alone(local, sink):
    enqueue(local, "m1", "m2")
    with worker_parts(local, batch_max_size=1) as parts:
        inbox = parts["inbox"]
        inbox.stage(max_items=1, max_age_seconds=0, now=utcnow())
        held = inbox.batches()[0]
        other = parts["open_ledger"]()
        try:
            assert other.acquire_batch(held, owner=current_owner("deliver-run"),
                                       lease_seconds=300, now=utcnow()) == 1
            totals = run_worker(**parts, owner=current_owner("worker"), poll_seconds=0.05,
                                max_seconds=1.0)
            assert totals.delivered == 1, "only the batch nobody held"
            assert inbox.batches() == [held], "the held batch is untouched"
            held_ids = {item.key for item in inbox.read(held)}
            other.release_batch(held, owner=current_owner("deliver-run"),
                                retry_after_seconds=0, now=utcnow())
        finally:
            other.close()
        again = run_worker(**parts, owner=current_owner("worker"), poll_seconds=0.05,
                           max_seconds=1.0)
    assert again.delivered == 1, "released, it is the worker's to run"
    assert len(held_ids) == 1
    assert delivered_ids(local) == Counter({"m1": 1, "m2": 1})


def test_while_another_worker_has_the_staging_turn_a_worker_runs_batches_but_stages_none(
        local, sink):
    enqueue(local, "m1", "m2", "m3")
    with worker_parts(local, batch_max_size=1) as parts:
        inbox = parts["inbox"]
        inbox.stage(max_items=1, max_age_seconds=0, now=utcnow())  # staged before the turn
        other, stager = parts["open_ledger"](), current_owner("other-worker")
        try:
            turn = staging_turn(utcnow())
            assert other.acquire_batch(turn, owner=stager, lease_seconds=300, now=utcnow())
            held = run_worker(**parts, owner=current_owner("worker"), poll_seconds=0.05,
                              max_seconds=1.0)
            assert held.staged == 0 and held.delivered == 1, "it ran what was already staged"
            assert inbox.waiting() == 2, "and left staging to the turn's holder"
            other.release_batch(turn, owner=stager, retry_after_seconds=0, now=utcnow())
        finally:
            other.close()
        freed = run_worker(**parts, owner=current_owner("worker"), poll_seconds=0.05,
                           max_seconds=1.0)
    assert freed.staged == 2 and freed.delivered == 2
    assert delivered_ids(local) == Counter({"m1": 1, "m2": 1, "m3": 1})


def test_workers_take_the_ready_batches_in_turns_of_their_own_and_each_takes_all():
    batches = [f"b{n:02d}" for n in range(20)]
    firsts = {in_turn(batches, current_owner(f"worker-{n}"))[0] for n in range(8)}
    for n in range(8):
        assert sorted(in_turn(batches, current_owner(f"worker-{n}"))) == batches
    assert len(firsts) > 1, "not every worker starts with the oldest batch"
    assert in_turn([], current_owner("w")) == []


SECOND_OWNER = """
import json, sys
import dagster as dg
from notify_pipeline.jobs import build_pipeline
from notify_pipeline.ledger.base import current_owner
from notify_pipeline.profiles import resources_for
from notify_pipeline.resources import DeploymentResource
from notify_pipeline.settings import Settings
from notify_pipeline.run import run_worker

settings = Settings(batch_max_size=2, batch_max_age_seconds=0)
with dg.build_resources(resources_for(settings)) as r:
    print("ready", flush=True)
    run_worker(
        inbox=r.inbox.open(), open_ledger=r.ledger.open, warehouse=r.warehouse.open(),
        make_pipeline=lambda book: build_pipeline(
            book, r.deployment, r.registry, r.identity, r.signing, r.transport),
        owner=current_owner("second"), max_items=2, max_age_seconds=0, poll_seconds=0.01,
        max_seconds=300, on_batch=lambda s: print(json.dumps(s.as_dict()), flush=True))
"""


def test_two_owners_in_two_processes_never_deliver_a_message_twice(local, sink):
    ids = [f"m{n}" for n in range(40)]
    enqueue(local, *ids)
    inbox = LocalInbox(local.home)
    assert len(stage_batches(inbox, max_items=2, max_age_seconds=0)) == 20
    second = subprocess.Popen([sys.executable, "-c", SECOND_OWNER], cwd=REPO,
                              env={**os.environ, **local.env}, stdout=subprocess.PIPE, text=True)
    try:
        assert second.stdout is not None and second.stdout.readline() == "ready\n"
        with worker_parts(local, batch_max_size=2) as parts:
            first = BackgroundWorker(parts, current_owner("first"), poll_seconds=0.01,
                                     max_seconds=300)
            wait_for(lambda: not inbox.batches(), 120, "every batch to be run")
            totals = first.join()
            second.send_signal(signal.SIGINT)  # a terminated run: interrupted, not asked
            theirs, _ = second.communicate(timeout=60)
            book = parts["open_ledger"]()
            try:
                flush_events(book, parts["warehouse"])  # whatever an interrupt left unflushed
            finally:
                book.close()
    finally:
        if second.poll() is None:
            second.kill()
    their_batches = [json.loads(line) for line in theirs.splitlines()]
    assert delivered_ids(local) == Counter(dict.fromkeys(ids, 1))
    assert totals.delivered + sum(b["delivered"] for b in their_batches) == len(ids)
    ours = {b["batch_id"] for b in first.batches}
    assert len(ours) == totals.batches == len(first.batches)
    assert ours.isdisjoint(b["batch_id"] for b in their_batches), "each batch had one owner"
    assert len(ours) + len(their_batches) == 20
    assert ours and their_batches, "both owners took part"
    assert Counter(r["message_id"] for r in local.events("event_type = 'delivery'")) == Counter(
        dict.fromkeys(ids, 1))


# --- failures ------------------------------------------------------------------------------------


class _BrokenRead(LocalInbox):
    """The local inbox, except that reading one batch raises (say, a corrupt folder)."""

    broken: str | None = None

    def read(self, batch_id: str) -> Iterator[InboxItem]:
        if batch_id == self.broken:
            raise OSError(f"cannot read {batch_id}")
        return super().read(batch_id)


# Long enough for two one-message batches on a loaded 2-core machine; the hot-loop bound below
# scales with it.
RUN_SECONDS = 4.0


@pytest.mark.parametrize(("retry_seconds", "max_errors"), [(0.0, None), (30.0, 1)])
def test_an_exception_in_one_batch_is_logged_and_the_others_still_run(
        local, sink, caplog, retry_seconds, max_errors):
    enqueue(local, "bad")
    inbox = _BrokenRead(local.home)
    inbox.stage(max_items=1, max_age_seconds=0, now=utcnow())
    inbox.broken = inbox.batches()[0]
    enqueue(local, "m1", "m2")
    with worker_parts(local, batch_max_size=1, provider_retry_seconds=retry_seconds) as parts:
        caplog.set_level(logging.ERROR, logger="notify_pipeline.run.worker")
        totals = run_worker(**{**parts, "inbox": inbox}, owner=current_owner("w"),
                            poll_seconds=0.1, max_seconds=RUN_SECONDS)
        status = parts["open_ledger"]().batch_status(inbox.broken, now=utcnow())
    assert delivered_ids(local) == Counter({"m1": 1, "m2": 1}), "the other batches ran"
    assert totals.delivered == 2
    assert inbox.batches() == [inbox.broken], "the failed batch is kept for a later attempt"
    failures = [r for r in caplog.records if inbox.broken in r.getMessage()]
    assert failures and all(r.exc_info for r in failures), "logged with its traceback"
    assert totals.errors == len(failures) >= 1
    # Never a hot loop: the batch waits for its retry delay, and between passes for the poll.
    assert totals.errors <= (max_errors or round(RUN_SECONDS / 0.1) + 1)
    assert status.ready is (retry_seconds == 0), "the lease was released with its retry delay"


# --- the Dagster job -----------------------------------------------------------------------------


def test_delivery_worker_job_delivers_logs_each_batch_and_reports_totals(local, sink):
    enqueue(local, "m1", "m2", "m3")
    local.enqueue(local.request(id="x", service="nobody"))
    settings = local.settings.model_copy(update={"batch_max_age_seconds": 0.0,
                                                 "worker_max_seconds": 2.0})
    captured = {"python_logs": {"managed_python_loggers": ["notify_pipeline"]}}
    with dg.instance_for_test(overrides=captured) as instance:
        started = time.time()
        result = delivery_worker.execute_in_process(resources=resources_for(settings),
                                                    instance=instance)
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
        run = instance.get_run_by_id(result.run_id)
    assert result.success
    totals = result.output_for_node("work_inbox")
    assert totals["delivered"] == 3 and totals["rejected"] == {"unknown_service": 1}
    assert totals["batches"] == 1 and totals["events"] > 0
    outputs = [e for e in result.all_node_events if e.is_successful_output]
    assert outputs[0].step_output_data.metadata["delivered"].value == 3
    lines = [m for m in logs if m.startswith("batch ")]
    assert len(lines) == 1
    assert lines[0].endswith(": 4 request(s): 3 delivered, 1 rejected (unknown_service 1)")
    assert sum(m.startswith("rejected ") for m in logs) == 1, "each rejection logged once"
    table = outputs[0].step_output_data.metadata["outcomes"].value
    assert "| delivered | 3 |" in table and "| rejected: unknown_service | 1 |" in table
    assert run is not None and run.tags[OWNER_TAG] == current_owner(result.run_id)
    assert run.tags["notify/kind"] == "worker"
    ends_at = datetime.fromisoformat(run.tags[ENDS_AT_TAG]).timestamp()
    assert int(started) + 1 <= ends_at <= time.time() + 1, "when it meant to end, in ISO 8601"


# --- the sensors ---------------------------------------------------------------------------------


def _worker_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus,
                owner: str | None = None, ends_in: float | None = None,
                slot: int | None = None) -> dg.DagsterRun:
    """A worker run record as the daemon would have written it (no process behind it)."""
    location = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4266, location_name="notify")
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"),
                             delivery_worker.name)
    tags = {OWNER_TAG: owner} if owner else {}
    if ends_in is not None:
        tags[ENDS_AT_TAG] = datetime.fromtimestamp(time.time() + ends_in, UTC).isoformat()
    if slot is not None:
        tags[SLOT_TAG] = str(slot)
    return instance.add_run(dg.DagsterRun(job_name=delivery_worker.name, status=status,
                                          tags=tags, remote_job_origin=origin))


def _tick(sensor: Any, instance: dg.DagsterInstance, local=None, cursor: str | None = None,
          workers: int = 1):
    resources = (resources_for(local.settings) if local is not None
                 else {"deployment": DeploymentResource(delivery_workers=workers)})
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def _keys(result: Any) -> list[str]:
    assert isinstance(result, dg.SensorResult), result
    return [r.run_key for r in result.run_requests or []]


def test_worker_sensor_requests_one_worker_with_a_counted_run_key():
    with dg.instance_for_test() as instance:
        first = _tick(delivery_worker_sensor, instance)
        same = _tick(delivery_worker_sensor, instance)
        later = _tick(delivery_worker_sensor, instance, cursor='{"0": 4}')
    assert _keys(first) == ["worker.0.0"]
    assert json.loads(first.cursor) == {"0": 1}
    assert _keys(same) == ["worker.0.0"], "same cursor, same key"
    assert _keys(later) == ["worker.0.4"]
    assert json.loads(later.cursor) == {"0": 5}
    assert first.run_requests[0].tags == {SLOT_TAG: "0"}


def test_a_cursor_from_before_slots_counts_on_in_slot_0():
    with dg.instance_for_test() as instance:
        result = _tick(delivery_worker_sensor, instance, cursor="7")
    assert _keys(result) == ["worker.0.7"]


def test_n_workers_fill_n_slots_and_only_the_empty_ones_are_refilled():
    with dg.instance_for_test() as instance:
        first = _tick(delivery_worker_sensor, instance, workers=3)
        _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=current_owner("a"), slot=0)
        _worker_run(instance, dg.DagsterRunStatus.QUEUED, slot=2)
        one_missing = _tick(delivery_worker_sensor, instance, cursor=first.cursor, workers=3)
        _worker_run(instance, dg.DagsterRunStatus.STARTING, slot=1)
        full = _tick(delivery_worker_sensor, instance, cursor=one_missing.cursor, workers=3)
    assert _keys(first) == ["worker.0.0", "worker.1.0", "worker.2.0"]
    assert [r.tags[SLOT_TAG] for r in first.run_requests] == ["0", "1", "2"]
    assert _keys(one_missing) == ["worker.1.1"], "slot 1's second run; 0 and 2 are filled"
    assert json.loads(one_missing.cursor) == {"0": 1, "1": 2, "2": 1}
    assert isinstance(full, dg.SkipReason)


def test_a_killed_worker_is_failed_and_only_its_slot_is_refilled():
    with dg.instance_for_test() as instance:
        dead = _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=_dead_owner("d"), slot=1)
        _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=current_owner("a"), slot=0)
        result = _tick(delivery_worker_sensor, instance, cursor='{"0": 1, "1": 1}', workers=2)
        after = instance.get_run_by_id(dead.run_id)
    assert _keys(result) == ["worker.1.1"]
    assert after is not None and after.status is dg.DagsterRunStatus.FAILURE


def test_slots_beyond_fewer_workers_are_left_to_end_and_not_refilled():
    with dg.instance_for_test() as instance:
        _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=current_owner("a"), slot=0)
        _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=current_owner("b"), slot=1,
                    ends_in=10)
        result = _tick(delivery_worker_sensor, instance, cursor='{"0": 1, "1": 1}', workers=1)
    assert isinstance(result, dg.SkipReason)


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
def test_worker_sensor_requests_no_second_worker_while_one_is_active(status):
    with dg.instance_for_test() as instance:
        run = _worker_run(instance, status, owner=current_owner("live"))
        result = _tick(delivery_worker_sensor, instance, cursor="1")
    assert isinstance(result, dg.SkipReason)
    assert run.run_id in (result.skip_message or "")


def test_a_worker_about_to_end_gets_its_successor_early_and_only_one():
    with dg.instance_for_test() as instance:
        hour_left = _worker_run(instance, dg.DagsterRunStatus.STARTED,
                                owner=current_owner("old"), ends_in=3000)
        far = _tick(delivery_worker_sensor, instance, cursor="2")
        instance.report_run_canceled(hour_left)
        _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=current_owner("old"),
                    ends_in=HANDOVER_SECONDS - 10)
        near = _tick(delivery_worker_sensor, instance, cursor="2")
        _worker_run(instance, dg.DagsterRunStatus.QUEUED, owner=current_owner("new"))
        both = _tick(delivery_worker_sensor, instance, cursor="3")
    assert isinstance(far, dg.SkipReason), "an hour to go: no successor yet"
    assert _keys(near) == ["worker.0.2"]
    assert isinstance(both, dg.SkipReason), "never a third while two overlap"


@pytest.mark.parametrize("status", FINISHED)
def test_worker_sensor_requests_the_next_worker_once_one_has_ended(status):
    with dg.instance_for_test() as instance:
        _worker_run(instance, status, owner=current_owner("gone"))
        result = _tick(delivery_worker_sensor, instance, cursor="1")
    assert _keys(result) == ["worker.0.1"]


def test_a_started_worker_whose_process_died_is_failed_and_replaced():
    dead = _dead_owner("dead")
    with dg.instance_for_test() as instance:
        run = _worker_run(instance, dg.DagsterRunStatus.STARTED, owner=dead)
        result = _tick(delivery_worker_sensor, instance, cursor="3")
        after = instance.get_run_by_id(run.run_id)
    assert _keys(result) == ["worker.0.3"]
    assert after is not None and after.status is dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
def test_inbox_sensor_stays_out_of_the_inbox_while_a_worker_is_active(local, monkeypatch,
                                                                     status):
    monkeypatch.setenv("NOTIFY_BATCH_MAX_AGE_SECONDS", "0")
    enqueue(local, "m1")
    with dg.instance_for_test() as instance:
        run = _worker_run(instance, status, owner=current_owner("live"))
        result = _tick(inbox_sensor, instance, local)
        assert isinstance(result, dg.SkipReason)
        assert run.run_id in (result.skip_message or "")
        assert LocalInbox(local.home).waiting() == 1, "nothing staged while the worker is there"
        instance.report_run_canceled(run)
        after = _tick(inbox_sensor, instance, local)
    assert isinstance(after, dg.SensorResult), "with the worker gone it stages and requests runs"
    assert len(after.run_requests or []) == 1
    assert LocalInbox(local.home).waiting() == 0


# --- wiring --------------------------------------------------------------------------------------


def test_worker_sensor_is_registered_unless_turned_off(local, monkeypatch):
    assert "delivery_worker_sensor" in [s.name for s in build_definitions(local.settings).sensors]
    monkeypatch.setenv("NOTIFY_DELIVERY_WORKER", "false")
    off = build_definitions(local.settings)
    assert [s.name for s in off.sensors or []] == [
        "inbox_sensor", "registry_sensor", "services_sensor"]
    assert "delivery_worker" in [j.name for j in off.resolve_all_job_defs()], "still launchable"


def test_notify_process_runs_batches_itself_and_never_a_worker(local, sink, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    enqueue(local, "m1", "m2")
    summary = process_once(local.settings)
    with dg.DagsterInstance.get() as instance:
        jobs = Counter(r.job_name for r in instance.get_runs())
    assert summary["delivered"] == 2
    assert jobs == Counter({"deliver_batch": 1})
