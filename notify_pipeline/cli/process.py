"""`notify process` and `notify analytics`: every sensor and asset of the profile, run to completion
in this process, as the Dagster daemon would run them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from notify_pipeline.settings import Profile, Settings

if TYPE_CHECKING:
    from notify_pipeline.run import Totals



log = logging.getLogger(__name__)
PENDING_COUNTED = 10_000  # events_pending counts the outbox up to this many


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 1 when a run failed or events could not reach the warehouse (stderr says why); the
    summary is printed either way."""
    with _sink_if_needed(settings), _quiet_unless(args.verbose):
        totals = process_once(settings, log_level="DEBUG" if args.verbose else "ERROR")
    print(json.dumps(totals, indent=2, sort_keys=True))
    return 1 if totals["failed_runs"] or totals["events_pending"] else 0


@contextmanager
def _quiet_unless(verbose: bool) -> Iterator[None]:
    """Our own warnings (one line per rejection, say) on stderr; Dagster's run log and its
    API-stability warnings only with --verbose."""
    import dagster as dg

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("notify: %(message)s"))
    ours = logging.getLogger("notify_pipeline")
    level = ours.level
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore", dg.BetaWarning)
                warnings.simplefilter("ignore", dg.PreviewWarning)
            yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)  # an in-process caller (a test, say) keeps its own logging


@contextmanager
def _sink_if_needed(settings: Settings) -> Iterator[None]:
    """Locally, start the embedded sink for this pass when nothing listens on its address."""
    from notify_pipeline.sink import MaildirSink

    local = settings.profile is Profile.LOCAL and settings.smtp_host in ("127.0.0.1", "localhost")
    if not local or _listening(settings.smtp_host, settings.smtp_port):
        yield
        return
    print(f"notify: no SMTP server on {settings.smtp_host}:{settings.smtp_port}; running the"
          " local sink for this pass", file=sys.stderr)
    with MaildirSink(settings.mail_dir, host=settings.smtp_host, port=settings.smtp_port):
        yield


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def process_once(
    settings: Settings, *, max_rounds: int = 1000, log_level: str = "DEBUG"
) -> dict[str, Any]:
    """One pass over every configured source: evaluate each sensor of the profile and run every
    run it asks for to completion, in process, until it asks for nothing new.

    A pass takes each batch at most once: a batch handed back for a retry waits for the next.
    A run that fails (the warehouse unreachable when its events are written, say) is logged
    and counted in `failed_runs`, and the pass goes on with the other runs: whatever the failed
    run had delivered is in the ledger, its events in the ledger outbox. `events_pending`
    counts the events still there at the end, for a later pass to write. `log_level` is that of
    the runs' Dagster console log.
    """
    import dagster as dg

    from notify_pipeline.definitions import build_definitions
    from notify_pipeline.profiles import resources_for
    from notify_pipeline.run import Totals
    from notify_pipeline.sensors.worker import delivery_worker_sensor

    drain = settings.model_copy(update={"batch_max_age_seconds": 0.0})
    defs = build_definitions(drain)
    resources = resources_for(drain)
    totals = Totals()
    with _instance() as instance:
        for sensor in defs.sensors or []:
            if sensor.name == delivery_worker_sensor.name or not sensor.has_jobs:
                continue  # a pass runs each batch itself; a worker run would outlive it
            job = defs.resolve_job_def(str(sensor.job_name))
            cursor: str | None = None
            seen: set[str] = set()
            for _round in range(max_rounds):
                with dg.build_sensor_context(
                    instance=instance, resources=resources, cursor=cursor
                ) as context:
                    result = sensor(context)
                if not isinstance(result, dg.SensorResult):
                    break
                cursor = result.cursor or cursor
                fresh = [r for r in result.run_requests or [] if _work_of(r) not in seen]
                if not fresh:
                    break
                for request in fresh:
                    seen.add(_work_of(request))
                    config = {**request.run_config,
                              "loggers": {"console": {"config": {"log_level": log_level}}}}
                    outcome = job.execute_in_process(
                        run_config=config, instance=instance, tags=request.tags,
                        raise_on_error=False,
                    )
                    _tally(outcome, totals)
    written, pending = _flush_leftovers(drain)
    totals.events += written
    data = totals.as_dict()
    data["failed_runs"], data["events_pending"] = data.pop("errors"), pending
    del data["staged"]
    return data


def cmd_analytics(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.assets.run import run_analytics

    with _instance() as instance:
        print(json.dumps(run_analytics(settings, instance, args.service), indent=2,
                         sort_keys=True))
    return 0


def _work_of(request: Any) -> str:
    """What a run request is about: its batch when it has one, else its run key."""
    from notify_pipeline.jobs import BATCH_TAG

    return str(request.tags.get(BATCH_TAG) or request.run_key)


def _tally(outcome: Any, totals: Totals) -> None:
    """Add the outputs of one run's steps that succeeded; `events` counts events written to
    the warehouse, `errors` failed runs."""
    from notify_pipeline.run import BatchSummary

    steps = {"deliver_batch": ("deliver", "record_events"),
             "record_provider_events": (None, "flush_outbox")}
    deliver, record = steps.get(outcome.dagster_run.job_name, (None, None))
    done = {event.step_key for event in outcome.all_node_events if event.is_step_success}
    if deliver in done:
        totals.add_batch(BatchSummary.from_dict(outcome.output_for_node(deliver)))
    if record in done:
        totals.events += outcome.output_for_node(record)
    if not outcome.success:
        totals.errors += 1
        failures = [e.step_failure_data.error for e in outcome.all_node_events
                    if e.is_step_failure and e.step_failure_data.error is not None]
        why = failures[0].message.strip() if failures else "see the run's log"
        log.error("run %s (%s) failed: %s", outcome.run_id, outcome.dagster_run.job_name, why)


def _flush_leftovers(settings: Settings) -> tuple[int, int]:
    """Write any events still in the outbox (e.g. from a run that stopped after delivering);
    returns (events written, events left in the outbox because the warehouse refused them,
    counted up to `PENDING_COUNTED`)."""
    from notify_pipeline.run import flush_events

    with deployment_resources(settings, "ledger", "warehouse") as built:
        try:
            return flush_events(built.ledger, built.warehouse.open()), 0
        except Exception as exc:  # the warehouse's own errors: any type its client raises
            pending = len(built.ledger.pending_events(PENDING_COUNTED))
            log.error("writing events to the warehouse failed; %d event(s) wait in the ledger"
                      " outbox for the next pass: %s", pending, exc)
            return 0, pending


@contextmanager
def deployment_resources(settings: Settings, *names: str) -> Iterator[Any]:
    """The profile's resources by name, as the runs build them; `ledger` comes opened."""
    import dagster as dg

    from notify_pipeline.profiles import resources_for

    wanted = {k: v for k, v in resources_for(settings).items() if k in names}
    with dg.build_resources(wanted) as built:
        parts = {name: getattr(built, name) for name in names}
        if "ledger" not in names:
            yield SimpleNamespace(**parts)
            return
        parts["ledger"] = built.ledger.open()
        try:
            yield SimpleNamespace(**parts)
        finally:
            parts["ledger"].close()


def _instance() -> Any:
    """The DAGSTER_HOME instance when there is one (runs show in the UI), else an ephemeral one."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()
