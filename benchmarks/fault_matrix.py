"""The provider fault matrix: each fault, in a batch beside healthy messages, through the pipeline.

Each case writes `MESSAGES` requests into a fresh local deployment's inbox (one recipient each;
the one at `FAULTY` is the one the peer mistreats), stages them as one batch and runs it the way
a delivery worker does (`Pipeline.process_batch`, then `flush_events`) until nothing is left in
the batch, a batch handed back waiting a short retry delay (`RETRY_SECONDS`). The pipeline is the
production one (local registry, identity tokens, DKIM, SQLite ledger, DuckDB events); only its
provider misbehaves: `FaultySmtp` or `SesFaultProxy` in front of moto (`benchmarks.fault_peers`).

A message is **held** when it ended as its case expects, with exactly one terminal event
(`delivery`, `bounce`, `failure`, `reject`; for SES, whose delivery is reported later, the
`send` of an accepted message stands for it) and at most one copy at the peer (exactly one for
a delivered message). Anything else is **lost**: no terminal event, two of them, a second copy,
or the wrong classification.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.fault_peers import FaultySmtp, SesFaultProxy, SmtpFault
from benchmarks.harness import ACCOUNT, REGISTRY, SERVICE

MESSAGES = 5
FAULTY = 2  # the third of five: healthy messages before and after it
DOMAIN = "notify.example.org"
SES_REGION = "eu-west-2"
SMTP_TIMEOUT = 0.5  # the client's; a stall outlasts it
STALL = 1.5
MAX_PASSES = 8  # more than the pipeline's bounded attempts (5)
WORKER_SECONDS = 10.0  # the warehouse case's worker loop, at most
RETRY_SECONDS = 0.25  # NOTIFY_PROVIDER_RETRY_SECONDS: how long a handed-back batch waits
DELIVERED = "delivery"
SENT = "send"
TERMINAL = ("delivery", "bounce", "failure", "reject")


@dataclass(frozen=True)
class Case:
    """One fault and the faulty message's expected end: an event type, and a reason prefix."""

    name: str
    provider: str  # "smtp" or "ses"
    faults: tuple[str, ...] = ()  # per attempt, for the faulty message
    repeat: bool = False  # the last fault for ever
    expect: str = DELIVERED
    reason: str = ""
    copies: int = 1  # copies of the faulty message the peer must end with
    healthy_may_be_ambiguous: bool = False  # a restart may cut a hand-off short
    attempts: int = 1  # hand-off attempts the peer must see for the faulty message (0: any)
    passes: int = 1  # runs of the batch it must take (0: any, within the bounded attempts)
    # How long deferred recipients are retried after the request arrived (the pipeline's
    # `recipient_retry_for`); 0 leaves the attempts alone to bound them, so that a case
    # deferring for ever ends within the matrix's passes instead of a day later.
    recipient_retry_seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.name.replace(" ", "-").replace(",", "").replace("/", "-").lower()


SMTP_TRIES = 3  # SmtpTransport's attempts per hand-off
SES_TRIES = 4  # SesTransport's
PIPELINE_TRIES = 5  # the pipeline's claims of one message (NOTIFY_MAX_MESSAGE_ATTEMPTS)


def smtp_cases() -> list[Case]:
    once: dict[str, Any] = {"attempts": 2, "passes": 1}
    cases = [Case(f"smtp RCPT {code} once", "smtp", (f"rcpt:{code}",), **once)
             for code in ("421", "450", "451", "452")]
    cases += [Case(f"smtp RCPT {code} always", "smtp", (f"rcpt:{code}",), repeat=True,
                   expect="failure", reason="recipient_failed", copies=0,
                   attempts=SMTP_TRIES * PIPELINE_TRIES, passes=PIPELINE_TRIES)
              for code in ("450", "451", "452")]
    cases.append(Case("smtp RCPT 450 four times, greylisting", "smtp", ("rcpt:450",) * 4,
                      attempts=SMTP_TRIES + 2, passes=2))  # waits, the batch's others go on
    cases.append(Case("smtp RCPT 450 for more than five attempts, greylisting within the window",
                      "smtp", ("rcpt:450",) * (SMTP_TRIES * PIPELINE_TRIES + 1),
                      attempts=SMTP_TRIES * PIPELINE_TRIES + 2, passes=PIPELINE_TRIES + 1,
                      recipient_retry_seconds=600.0))
    cases.append(Case("smtp RCPT 421 always", "smtp", ("rcpt:421",), repeat=True,
                      expect="failure", reason="provider_unavailable", copies=0,
                      attempts=SMTP_TRIES * PIPELINE_TRIES, passes=PIPELINE_TRIES))
    cases += [Case(f"smtp RCPT {code}", "smtp", (f"rcpt:{code}",), expect="bounce", reason=code,
                   copies=0) for code in ("550", "552", "554")]
    cases += [Case(f"smtp DATA end {code} once", "smtp", (f"data:{code}",), **once)
              for code in ("421", "450", "451", "452")]
    cases.append(Case("smtp DATA end 452 always", "smtp", ("data:452",), repeat=True,
                      expect="failure", reason="provider_unavailable", copies=0,
                      attempts=SMTP_TRIES * PIPELINE_TRIES, passes=PIPELINE_TRIES))
    cases += [Case(f"smtp DATA end {code}", "smtp", (f"data:{code}",), expect="bounce",
                   reason=code, copies=0) for code in ("550", "552", "554")]
    cases += [
        Case("smtp connection dropped at RCPT", "smtp", ("rcpt:drop",), **once),
        Case("smtp connection dropped after the body", "smtp", ("data:drop",),
             expect="failure", reason="ambiguous_handoff"),
        Case("smtp timeout mid-DATA", "smtp", ("data:stall",), expect="failure",
             reason="ambiguous_handoff"),
        Case("smtp server restarted mid-run", "smtp", healthy_may_be_ambiguous=True,
             attempts=0, passes=0),
    ]
    return cases


def ses_cases() -> list[Case]:
    always: dict[str, Any] = {
        "repeat": True, "expect": "failure", "reason": "provider_unavailable", "copies": 0,
        "attempts": SES_TRIES * PIPELINE_TRIES, "passes": PIPELINE_TRIES,
    }
    return [
        Case("ses throttling twice", "ses", ("throttling", "429"), expect=SENT, attempts=3),
        Case("ses throttling always", "ses", ("throttling",), **always),
        Case("ses 5xx once", "ses", ("500",), expect=SENT, attempts=2),
        Case("ses 5xx always", "ses", ("503",), **always),
        Case("ses message rejected", "ses", ("rejected",), expect="failure",
             reason="provider_refused", copies=0),
        Case("ses sending paused once", "ses", ("paused",), expect=SENT, attempts=2, passes=2),
        Case("ses reply lost", "ses", ("lost",), expect="failure", reason="ambiguous_handoff"),
    ]


WAREHOUSE_CASE = Case("warehouse unavailable at the first flushes", "smtp", attempts=0,
                      passes=0)
CASES = [*smtp_cases(), *ses_cases(), WAREHOUSE_CASE]


@dataclass
class Ended:
    """How one message ended: its terminal events (type, reason) and its copies at the peer."""

    message_id: str
    terminal: list[tuple[str, str]]
    copies: int


@dataclass
class CaseResult:
    case: Case
    ended: list[Ended]
    passes: int
    peer_attempts: int  # hand-off attempts the peer saw for the faulty message
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def held(self, message: Ended, index: int) -> bool:
        case = self.case
        if len(message.terminal) != 1:
            return False
        kind, reason = message.terminal[0]
        if index == FAULTY and case.faults:
            return (kind == case.expect and reason.startswith(case.reason)
                    and message.copies == case.copies)
        healthy = SENT if case.provider == "ses" else DELIVERED
        if kind == healthy:
            return message.copies == 1
        return (case.healthy_may_be_ambiguous and kind == "failure"
                and reason.startswith("ambiguous_handoff") and message.copies <= 1)

    @property
    def figures(self) -> dict[str, Any]:
        held = sum(self.held(m, i) for i, m in enumerate(self.ended))
        faulty = self.ended[FAULTY].terminal
        ended = " ".join(faulty[0]).strip() if len(faulty) == 1 else repr(faulty)
        return {"case": self.case.name, "tried": len(self.ended), "held": held,
                "lost": len(self.ended) - held,
                "faulty_ended": ended if self.case.faults else "",
                "peer_attempts": self.peer_attempts, "passes": self.passes,
                "seconds": round(self.seconds, 2), **self.notes}


class Bench:
    """A fresh local deployment under `home`: its inbox, ledger, warehouse and pipeline parts."""

    def __init__(self, home: Path, *, warehouse_lock_wait: float = 60.0) -> None:
        from notify_pipeline.identity import FileCertSource, TokenVerifier
        from notify_pipeline.inbox.local import LocalInbox
        from notify_pipeline.ledger.sqlite import SqliteLedger
        from notify_pipeline.local_issuer import LocalIssuer
        from notify_pipeline.settings import Settings
        from notify_pipeline.signing import DkimKeyStore
        from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

        home.mkdir(parents=True, exist_ok=True)
        self.settings = s = Settings(home=home, registry=REGISTRY, domain=DOMAIN)
        self.issuer = LocalIssuer(s.keys_dir, s.local_issuer)
        self.issuer.certs()
        self.verifier = TokenVerifier(certs=FileCertSource(self.issuer.certs_path),
                                      audience=s.deployment_audience,
                                      issuers=frozenset({s.local_issuer}))
        self.keys = DkimKeyStore(s.keys_dir, s.dkim_selector)
        self.ledger = SqliteLedger(s.ledger_path)
        self.warehouse = DuckDBWarehouse(s.warehouse_path, lock_wait_seconds=warehouse_lock_wait)
        self.inbox = LocalInbox(home)

    def pipeline(self, transport: Any, ledger: Any = None, *,
                 recipient_retry_seconds: float = 0.0) -> Any:
        from notify_pipeline.policy import Domains
        from notify_pipeline.registry import load_registry
        from notify_pipeline.run import Pipeline
        from notify_pipeline.signing import DkimSigner

        signers: dict[str, DkimSigner] = {}
        return Pipeline(
            registry=load_registry(self.settings.registry),
            domains=Domains(self.settings.domain, self.settings.testing_domain),
            verifier=self.verifier, ledger=ledger or self.ledger, transport=transport,
            signer_for=lambda d: signers.setdefault(d, DkimSigner(self.keys.key_for(d))),
            retry_after_seconds=RETRY_SECONDS, render_processes=0,
            recipient_retry_for=timedelta(seconds=recipient_retry_seconds),
        )

    def enqueue(self, prefix: str, count: int) -> list[str]:
        import json

        token = self.issuer.mint(service_account=ACCOUNT,
                                 audience=self.settings.deployment_audience)
        ids = [f"{prefix}-{n}" for n in range(count)]
        for n, message_id in enumerate(ids):
            body = {"version": 1, "id": message_id, "service": SERVICE, "identity_token": token,
                    "to": [recipient(message_id)], "subject": message_id, "text": "Hello"}
            self.inbox.write_request(json.dumps(body).encode(), f"{n:03d}-{message_id}.json")
        return ids

    def stage(self) -> str:
        from notify_pipeline.events import utcnow

        batch_id = self.inbox.stage(max_items=1000, max_age_seconds=0, now=utcnow())
        assert batch_id is not None
        return batch_id

    def drain(self, pipeline: Any, batch_id: str, flush: Callable[[], None]) -> int:
        """Run the batch, as a worker would, until it is finished; returns the passes it took.
        A batch handed back is run again once its retry delay has passed."""
        from notify_pipeline.events import utcnow

        for passes in range(1, MAX_PASSES + 1):
            while not self.ledger.batch_status(batch_id, now=utcnow()).ready:
                time.sleep(0.02)
            with pipeline.transport:
                pipeline.process_batch(self.inbox, batch_id, owner=_owner(passes))
            flush()
            if batch_id not in self.inbox.batches():
                return passes
        return MAX_PASSES

    def flush(self) -> None:
        from notify_pipeline.run import flush_events

        flush_events(self.ledger, self.warehouse)

    def outcomes(self, ids: list[str], copies: Counter[str], *, ses: bool = False) -> list[Ended]:
        from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

        rows = DuckDBWarehouse(self.settings.warehouse_path).query(
            "SELECT message_id, event_type, coalesce(reason, '') FROM notify_events.events"
            " ORDER BY message_id, event_type", ())
        ended = {message_id: Ended(message_id, [], copies[recipient(message_id)])
                 for message_id in ids}
        ending = {*TERMINAL, SENT} if ses else set(TERMINAL)
        for message_id, kind, reason in rows:
            if message_id in ended and kind in ending:
                ended[message_id].terminal.append((kind, reason))
        return [ended[message_id] for message_id in ids]

    def close(self) -> None:
        self.ledger.close()


def recipient(message_id: str) -> str:
    return f"{message_id}@example.org"


def _owner(attempt: int) -> str:
    from notify_pipeline.ledger.base import current_owner

    return current_owner(f"fault-matrix-{attempt}")


# --- running the cases --------------------------------------------------------------------------


def run_case(case: Case, root: Path, *, moto_endpoint: str | None = None) -> CaseResult:
    """Run `case` in a deployment of its own under `root`. The keys (token issuer, DKIM) made
    by the first case under `root` are copied to the others: making them is most of a case's
    time, and no fault here concerns them."""
    started = time.monotonic()
    home, keys = root / case.key, root / "keys"
    if keys.exists():
        shutil.copytree(keys, home / "keys")
    bench = Bench(home, warehouse_lock_wait=0.2)
    try:
        if case is WAREHOUSE_CASE:
            result = _warehouse_case(bench, case)
        elif case.provider == "smtp":
            result = _smtp_case(bench, case)
        else:
            assert moto_endpoint, "SES cases need moto"
            result = _ses_case(bench, case, moto_endpoint)
    finally:
        bench.close()
    if not keys.exists():
        shutil.copytree(home / "keys", keys)
    result.seconds = time.monotonic() - started
    return result


def _smtp_transport(port: int) -> Any:
    from notify_pipeline.defaults import SMTP_CONNECTIONS
    from notify_pipeline.delivery.pool import TransportPool
    from notify_pipeline.delivery.smtp import SmtpTransport

    def one() -> SmtpTransport:
        return SmtpTransport(host="127.0.0.1", port=port, timeout=SMTP_TIMEOUT,
                             backoff_seconds=0.02)

    return TransportPool(one, SMTP_CONNECTIONS)


def _smtp_case(bench: Bench, case: Case) -> CaseResult:
    ids = bench.enqueue(case.key, MESSAGES)
    faulty = recipient(ids[FAULTY])
    plan = {faulty: [SmtpFault.parse(f) for f in case.faults]}
    with FaultySmtp(bench.settings.mail_dir, plan, repeat=case.repeat,
                    stall_seconds=STALL) as peer:
        if not case.faults:  # the restart case: down for longer than the transport's retries
            # After the first stored message: with hand-offs overlapping, the first MAILs may
            # all be sent before any message is stored, but the fifth waits for a free
            # connection, so a message has been stored when it comes.
            peer.restart_after(1, down_seconds=0.3)
        pipeline = bench.pipeline(_smtp_transport(peer.port),
                                  recipient_retry_seconds=case.recipient_retry_seconds)
        passes = bench.drain(pipeline, bench.stage(), bench.flush)
        time.sleep(STALL if "stall" in "".join(case.faults) else 0)
        ended = bench.outcomes(ids, peer.copies)
        notes = {} if case.faults else {
            "restarts": peer.restarts,
            "ambiguous": sum(m.terminal[:1] == [("failure", "ambiguous_handoff")] for m in ended)}
        return CaseResult(case, ended, passes, peer.attempts[faulty], 0.0, notes)


def _ses_case(bench: Bench, case: Case, moto_endpoint: str) -> CaseResult:
    import boto3

    from notify_pipeline.delivery.ses import SesTransport

    with _aws_credentials():
        boto3.client("sesv2", endpoint_url=moto_endpoint, region_name=SES_REGION) \
            .create_email_identity(EmailIdentity=DOMAIN)
        ids = bench.enqueue(case.key, MESSAGES)
        with SesFaultProxy(moto_endpoint, {ids[FAULTY]: list(case.faults)},
                           repeat=case.repeat) as proxy:
            transport = SesTransport.from_config(
                region=SES_REGION, endpoint_url=proxy.url, connect_timeout=0.5, read_timeout=2.0,
                configuration_set=None, max_send_rate=1000.0, concurrency=4,
                backoff_seconds=0.01)
            passes = bench.drain(bench.pipeline(transport), bench.stage(), bench.flush)
            copies = Counter({recipient(k): n for k, n in proxy.relayed.items()})
            return CaseResult(case, bench.outcomes(ids, copies, ses=True), passes,
                              proxy.attempts[ids[FAULTY]], 0.0)


@contextmanager
def _aws_credentials() -> Iterator[None]:
    """Dummy credentials for moto, restored afterwards."""
    names = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _warehouse_case(bench: Bench, case: Case) -> CaseResult:
    """The warehouse file held by another process for the first flushes: a worker loop keeps
    delivering, its events wait in the ledger outbox, and reach the warehouse once it is back.
    The loop is stopped once the outbox is empty (or after `WORKER_SECONDS`)."""
    from notify_pipeline.ledger.sqlite import SqliteLedger
    from notify_pipeline.run import run_worker

    ids = bench.enqueue(case.key, MESSAGES)
    bench.warehouse.ensure_schema()
    stop = threading.Event()

    def stop_once_written() -> None:
        with closing(SqliteLedger(bench.settings.ledger_path)) as book:
            while not stop.wait(0.05):
                if not book.pending_events(1):
                    stop.set()

    with FaultySmtp(bench.settings.mail_dir) as peer, \
            _locked(bench.settings.warehouse_path) as release:
        transport = _smtp_transport(peer.port)

        def on_batch(_summary: Any) -> None:
            release(after=1.0, then=stop_once_written)  # back a second after the batch

        totals = run_worker(
            inbox=bench.inbox, open_ledger=lambda: SqliteLedger(bench.settings.ledger_path),
            make_pipeline=lambda book: bench.pipeline(transport, book),
            warehouse=bench.warehouse, owner=_owner(1), max_items=1000, max_age_seconds=0.0,
            poll_seconds=0.05, max_seconds=WORKER_SECONDS, on_batch=on_batch, stop=stop,
        )
        notes = {"flush_errors": totals.errors, "outbox_left": len(bench.ledger.pending_events(10))}
        return CaseResult(case, bench.outcomes(ids, peer.copies), totals.batches, 0, 0.0, notes)


@contextmanager
def _locked(path: Path) -> Iterator[Callable[..., None]]:
    """Another process holding the DuckDB file open for writing (DuckDB's own lock), until
    the returned `release(after=s)` lets it go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]);"
         " print('locked', flush=True); sys.stdin.readline()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == b"locked"

    def release(*, after: float, then: Callable[[], None]) -> None:
        def go() -> None:
            time.sleep(after)
            if holder.poll() is None and holder.stdin is not None:
                holder.stdin.write(b"\n")
                holder.stdin.flush()
                holder.wait(10)
            then()

        threading.Thread(target=go, daemon=True).start()

    try:
        yield release
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """`moto_server` on a free port of 127.0.0.1; yields its endpoint, stops it afterwards."""
    import urllib.request

    from benchmarks.harness import free_port, stop

    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    command = str(binary) if binary.exists() else shutil.which("moto_server")
    if command is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]'")
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log}") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        stop(proc)
