"""Provider faults and a warehouse outage, each met by a real batch beside healthy messages.

The peers are real protocol servers on 127.0.0.1 (`benchmarks.fault_peers`: aiosmtpd told what
to answer, an HTTP proxy in front of moto's SES); the pipeline is the production one
(`benchmarks.fault_matrix`, which `python -m benchmarks.reliability` runs for
docs/reliability.md). Whatever the fault: the faulty message ends as classified (temporary:
retried within bounds, then failed; permanent: one bounce or failure with its reason;
ambiguous: recorded, never sent again), every message has exactly one terminal event, the
healthy ones are delivered once each, and the batch is finished, never failed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.fault_matrix import (
    CASES,
    FAULTY,
    MESSAGES,
    WAREHOUSE_CASE,
    CaseResult,
    recipient,
    run_case,
)
from benchmarks.fault_peers import SesFaultProxy
from notify_pipeline.cli import process_once
from notify_pipeline.delivery.ses import SesTransport
from tests.emulators.moto import REGION, MotoServer
from tests.test_ses import DOMAIN, message

SMTP_CASES = [c for c in CASES if c.provider == "smtp" and c is not WAREHOUSE_CASE]
SES_CASES = [c for c in CASES if c.provider == "ses"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module's cases, so they share the keys the first one makes."""
    return tmp_path_factory.mktemp("faults")


def assert_held(result: CaseResult) -> None:
    case, ended = result.case, result.ended
    detail = [(m.message_id, m.terminal, m.copies) for m in ended]
    assert [len(m.terminal) for m in ended] == [1] * MESSAGES, detail
    assert result.figures["lost"] == 0, detail
    if case.faults:
        kind, reason = ended[FAULTY].terminal[0]
        assert (kind, ended[FAULTY].copies) == (case.expect, case.copies), detail
        assert reason.startswith(case.reason), detail
    if case.attempts:
        assert result.peer_attempts == case.attempts, "retried within its bounds"
    if case.passes:
        assert result.passes == case.passes, "handed back only as often as the rules say"


@pytest.mark.parametrize("case", SMTP_CASES, ids=lambda c: c.key)
def test_an_smtp_fault_ends_its_message_as_classified_and_spares_the_batch(case, root) -> None:
    result = run_case(case, root)

    assert_held(result)
    if not case.faults:  # the restart: nothing lost, nothing sent twice, the rest delivered
        assert result.notes["restarts"] == 1
        assert result.passes >= 2, "the batch was handed back while the server was away"


@pytest.mark.parametrize("case", SES_CASES, ids=lambda c: c.key)
def test_an_ses_fault_ends_its_message_as_classified_and_spares_the_batch(
    case, root, moto_server: MotoServer
) -> None:
    moto_server.reset()

    result = run_case(case, root, moto_endpoint=moto_server.endpoint)

    assert_held(result)
    stored = Counter(r for m in moto_server.sent_raw_messages() for r in set(m["destinations"]))
    expected = Counter({recipient(m.message_id): 1 for m in result.ended})
    expected[recipient(result.ended[FAULTY].message_id)] = case.copies
    assert stored == +expected, "what SES took, once each (moto lists To and the envelope)"


def test_events_wait_in_the_outbox_while_the_warehouse_is_away_and_reach_it_once(root) -> None:
    result = run_case(WAREHOUSE_CASE, root)

    assert_held(result)
    assert result.notes["flush_errors"] >= 1, "the first flushes met the locked warehouse"
    assert result.notes["outbox_left"] == 0, "then the worker wrote every event"


def test_notify_process_finishes_every_batch_while_the_warehouse_is_away(
    local, sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warehouse's file unusable: each run delivers and fails only at writing its events,
    the pass goes on with the next batch, and the next pass writes every event once."""
    monkeypatch.setenv("NOTIFY_BATCH_MAX_SIZE", "2")  # two batches
    for n in range(4):
        local.enqueue(local.request(id=f"w{n}", to=[f"w{n}@example.org"]))
    warehouse = local.settings.warehouse_path
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    warehouse.mkdir()  # DuckDB cannot open a folder

    away = process_once(local.settings)
    warehouse.rmdir()
    back = process_once(local.settings)

    assert (away["delivered"], away["batches"], away["failed_runs"]) == (4, 2, 2)
    assert away["events_pending"] == 12, "queued, send and delivery for each"
    assert (back["events"], back["events_pending"], back["failed_runs"]) == (12, 0, 0)
    assert len(local.maildir()) == 4
    terminal = Counter(r["message_id"] for r in local.events("event_type = 'delivery'"))
    assert terminal == Counter({f"w{n}": 1 for n in range(4)})


def test_retries_of_messages_that_met_the_same_throttling_are_spread_out(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server.reset()
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    moto_server.client("sesv2").create_email_identity(EmailIdentity=DOMAIN)
    ids = [f"j{n}" for n in range(8)]
    waits: list[float] = []
    with SesFaultProxy(moto_server.endpoint, {i: ["throttling"] for i in ids}) as proxy:
        ses = SesTransport.from_config(region=REGION, endpoint_url=proxy.url,
                                       configuration_set=None, max_send_rate=1000.0,
                                       backoff_seconds=0.01, sleep=waits.append)
        for message_id in ids:
            ses.send(message("a@example.net", message_id=message_id))

    assert len(waits) == len(ids)
    assert all(0.005 <= w <= 0.01 for w in waits), "half to all of the planned wait"
    assert len(set(waits)) == len(ids), "not all at the same instant"
