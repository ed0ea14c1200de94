"""SesTransport against moto's SES v2, and against a scripted HTTP peer in front of moto.

The peer answers the next send requests as scripted (429, throttling, 5xx, account errors, a lost
reply, a hang) and relays everything else to moto: botocore really parses each answer, so the
error classification is tested on the wire, not on mocks of boto3.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from benchmarks.fault_peers import answer_ses_error
from benchmarks.http_peer import BackgroundHttp, QuietHandler
from notify_pipeline import mime
from notify_pipeline.delivery.base import OutgoingMessage, RecipientStatus
from notify_pipeline.delivery.ses import (
    SendRateLimiter,
    SesTransport,
    decode_tag_value,
    encode_tag_value,
)
from notify_pipeline.delivery.shared_rate import SharedSendRate
from notify_pipeline.dns import verify
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.limits import SendingLimits, pool_configuration_set
from notify_pipeline.message import Envelope
from notify_pipeline.registry import AdvancedOptions, Registry
from notify_pipeline.signing import DkimKeyStore, DkimSigner
from tests.conftest import free_port
from tests.emulators.moto import REGION, MotoServer
from tests.helpers import make_harness

DOMAIN = "notify.example.org"
SENDER = f"lookup@{DOMAIN}"
SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


class ScriptedPeer:
    """An HTTP peer in front of moto: the next send requests get the scripted answers."""

    def __init__(self, upstream: str, script: list[str]) -> None:
        self.script = deque(script)
        self.sends: list[dict[str, Any]] = []  # the JSON body of every send request seen
        peer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/outbound-emails"):
                    peer.sends.append(json.loads(body))
                    if peer.script:
                        peer.answer(self, peer.script.popleft())
                        return
                peer.relay(self, upstream, body)

        self._http = BackgroundHttp(Handler)
        self.url = self._http.base_url

    def answer(self, handler: BaseHTTPRequestHandler, action: str) -> None:
        if action in ("reset", "hang"):
            if action == "hang":
                time.sleep(1.0)  # past the client's read timeout
            handler.close_connection = True
            handler.connection.close()  # the request arrived; no reply ever leaves
            return
        answer_ses_error(handler, action)

    @staticmethod
    def relay(handler: BaseHTTPRequestHandler, upstream: str, body: bytes) -> None:
        target = urlsplit(upstream)
        conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        conn.request("POST", handler.path, body, dict(handler.headers))
        response = conn.getresponse()
        data = response.read()
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                    "date", "server"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        conn.close()

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def ses(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto with the sending domain verified, and a recognisable secret in the environment."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    aws_env.client("sesv2").create_email_identity(EmailIdentity=DOMAIN)
    return aws_env


@pytest.fixture
def peer(ses: MotoServer) -> Iterator[Any]:
    peers: list[ScriptedPeer] = []

    def start(*script: str) -> ScriptedPeer:
        peers.append(ScriptedPeer(ses.endpoint, list(script)))
        return peers[-1]

    yield start
    for p in peers:
        p.close()


def transport(endpoint: str | None = None, **options: Any) -> SesTransport:
    options.setdefault("configuration_set", None)
    options.setdefault("max_send_rate", 1000.0)
    options.setdefault("backoff_seconds", 0.01)
    return SesTransport.from_config(region=REGION, endpoint_url=endpoint, connect_timeout=0.5,
                                    read_timeout=0.5, **options)


def message(*recipients: str, message_id: str = "msg-1", data: bytes | None = None):
    data = data or (f"From: {SENDER}\r\nTo: {recipients[0]}\r\nSubject: Hi\r\n\r\nHello\r\n"
                    .encode())
    return OutgoingMessage("lookup-notices", message_id, SENDER, recipients, data)


def test_send_hands_over_every_envelope_recipient_and_the_dkim_signed_bytes(
    ses: MotoServer, tmp_path: Path
) -> None:
    envelope = Envelope(service="lookup-notices", message_id="order.42:a_b",
                        from_display="Lookup", from_address=SENDER, to=("to@example.net",),
                        cc=("cc@example.net",), bcc=("hidden@example.net",), subject="Hello",
                        text="Hi there")
    key = DkimKeyStore(tmp_path / "keys", "notify1").key_for(DOMAIN)
    raw = mime.render(envelope, date=datetime.now(UTC), message_id_header="<a@notify>")
    signed = DkimSigner(key).sign(raw)

    with transport(configuration_set="notify-main") as t:
        result = t.send(message(*envelope.recipients, message_id=envelope.message_id,
                                data=signed))

    assert [o.status for o in result.outcomes] == [RecipientStatus.ACCEPTED] * 3
    [sent] = ses.sent_raw_messages()
    assert result.provider_message_id == sent["id"]
    assert "hidden@example.net" in sent["destinations"]  # Bcc: only in the envelope
    assert "hidden@example.net" not in sent["raw_data"]
    stored = sent["raw_data"].encode()
    assert stored.startswith(b"DKIM-Signature:")
    records = {f"notify1._domainkey.{DOMAIN}": f"v=DKIM1; k=rsa; p={key.public_key_b64()}"}
    assert verify(stored, records)  # the signature survived SES byte for byte


def test_request_carries_recipients_configuration_set_and_reversible_tags(peer) -> None:
    p = peer()
    with transport(p.url, configuration_set="notify-main") as t:
        t.send(message("a@example.net", "b@example.net", "a@example.net",
                       message_id="order.42:a_b"))
    [request] = p.sends
    assert request["Destination"] == {"ToAddresses": ["a@example.net", "b@example.net"]}
    assert request["ConfigurationSetName"] == "notify-main"
    tags = {tag["Name"]: tag["Value"] for tag in request["EmailTags"]}
    assert tags == {"service": "lookup-notices", "message_id": "order_d42_ca__b"}
    assert decode_tag_value(tags["message_id"]) == "order.42:a_b"


def test_a_service_with_its_own_configuration_set_uses_it(peer) -> None:
    p = peer()
    pools = {"lookup-notices": "notify-dedicated-pool"}
    with transport(p.url, configuration_set="notify-main", service_configuration_sets=pools) as t:
        t.send(message("a@example.net"))
        t.send(OutgoingMessage("other", "m", SENDER, ("a@example.net",), b"Subject: x\r\n\r\nx"))
    assert [r["ConfigurationSetName"] for r in p.sends] == ["notify-dedicated-pool",
                                                           "notify-main"]


def test_a_dedicated_pools_mail_goes_with_the_pools_configuration_set(ses: MotoServer,
                                                                       peer) -> None:
    """The operator's side, in moto: the pool and its configuration set (`notify-pool-<pool>`)
    whose sending pool it is; ours: every message of the pool's services names that set."""
    client = ses.client("sesv2")
    client.create_dedicated_ip_pool(PoolName="transactional")
    client.create_configuration_set(ConfigurationSetName="notify-pool-transactional",
                                    DeliveryOptions={"SendingPoolName": "transactional"})
    name = pool_configuration_set("transactional")
    configured = client.get_configuration_set(ConfigurationSetName=name)
    assert configured["DeliveryOptions"]["SendingPoolName"] == "transactional"

    p = peer()
    pooled = OutgoingMessage("lookup-notices", "m1", SENDER, ("a@example.net",),
                             b"Subject: x\r\n\r\nx", ip_pool="transactional")
    with transport(p.url, configuration_set="notify-main") as t:
        t.send(pooled)
        t.send(message("b@example.net", message_id="m2"))
    assert [r["ConfigurationSetName"] for r in p.sends] == [name, "notify-main"]
    assert len(ses.sent_raw_messages()) == 2


def test_a_pool_services_batch_reaches_ses_through_the_pool_under_its_warm_up(
        ses: MotoServer, peer, local) -> None:
    """The whole path: registry pool → warm-up quota in the ledger → SES with the pool's set."""
    p = peer()
    harness = make_harness(local, transport(p.url, configuration_set="notify-main"))
    harness.pipeline.limits = SendingLimits(warmup=(2,))
    registry = harness.pipeline.registry
    harness.pipeline.registry = Registry(
        s.model_copy(update={"advanced": AdvancedOptions(dedicated_ip_pool="transactional")})
        if s.id == "lookup-notices" else s for s in registry.services)
    for n in range(3):
        local.enqueue(local.request(id=f"m{n}", to=["a@example.net"]))
    inbox = LocalInbox(local.home)
    batch_id = inbox.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC))
    assert batch_id is not None

    summary = harness.run(inbox, batch_id)

    assert (summary.delivered, dict(summary.deferred_by)) == (2, {"warmup": 1})
    assert [r["ConfigurationSetName"] for r in p.sends] == ["notify-pool-transactional"] * 2
    assert len(ses.sent_raw_messages()) == 2


def test_two_workers_on_one_ledger_share_the_accounts_send_rate(ses: MotoServer,
                                                               tmp_path: Path) -> None:
    """Two transports, each on its own ledger connection as two worker runs are, send 20
    recipients each at a shared 20 a second (a bucket of 20): together they need ~1 s, where a
    limiter of each one's own would let both bursts through at once."""
    books = [SqliteLedger(tmp_path / "ledger.sqlite3") for _ in range(2)]
    rates = [SharedSendRate(book, bucket="ses:test", rate=20.0) for book in books]

    def work(n: int) -> int:
        with transport(limiter=rates[n], max_send_rate=20.0) as t:
            return len([t.send(message(f"r{i}@example.net", message_id=f"w{n}-{i}"))
                        for i in range(20)])

    start = time.monotonic()
    try:
        with ThreadPoolExecutor(2) as workers:
            assert sum(workers.map(work, range(2))) == 40
    finally:
        for book in books:
            book.close()
    assert time.monotonic() - start >= 0.9
    assert len(ses.sent_raw_messages()) == 40


def test_a_shared_rate_queues_every_connection_in_one_bucket(tmp_path: Path) -> None:
    clock = FakeClock()
    books = [SqliteLedger(tmp_path / "ledger.sqlite3") for _ in range(2)]
    first, second = (SharedSendRate(b, bucket="ses:eu-west-2", rate=10, clock=clock,
                                    sleep=lambda _s: None) for b in books)
    waits = [first.acquire(1) for _ in range(6)] + [second.acquire(1) for _ in range(6)]
    assert waits == pytest.approx([0.0] * 10 + [0.1, 0.2]), "one burst of 10 between them"
    books[0].close()
    with pytest.raises(RetryableDeliveryError, match="shared send rate"):
        first.acquire(1)  # nothing was sent: the message is handed back, not failed
    books[1].close()


def test_unverified_sender_is_a_permanent_failure(ses: MotoServer) -> None:
    stranger = OutgoingMessage("lookup-notices", "m", "x@unverified.example", ("a@example.net",),
                               b"From: x@unverified.example\r\n\r\nHi\r\n")
    with transport() as t, pytest.raises(PermanentDeliveryError, match="MessageRejected"):
        t.send(stranger)
    assert ses.sent_raw_messages() == []


def test_throttling_is_retried_with_backoff_until_ses_accepts(ses: MotoServer, peer) -> None:
    p = peer("429", "throttling", "limit", "500")
    with transport(p.url, max_attempts=5) as t:
        result = t.send(message("a@example.net"))
    assert len(p.sends) == 5
    assert [m["id"] for m in ses.sent_raw_messages()] == [result.provider_message_id]


def test_throttling_gives_up_after_the_bounded_attempts(ses: MotoServer, peer) -> None:
    p = peer(*["429"] * 10)
    with transport(p.url, max_attempts=3) as t, pytest.raises(RetryableDeliveryError,
                                                              match="after 3 attempt"):
        t.send(message("a@example.net"))
    assert len(p.sends) == 3
    assert ses.sent_raw_messages() == []


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ("bad-request", PermanentDeliveryError),
        ("rejected", PermanentDeliveryError),
        ("mail-from", PermanentDeliveryError),
        ("suspended", RetryableDeliveryError),
        ("paused", RetryableDeliveryError),
        ("no-config-set", RetryableDeliveryError),
        ("denied", RetryableDeliveryError),
        ("reset", AmbiguousHandoffError),
        ("hang", AmbiguousHandoffError),
    ],
)
def test_errors_that_retrying_now_cannot_fix_are_raised_after_one_request(
    peer, action: str, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    p = peer(action)
    with transport(p.url) as t, pytest.raises(error) as raised:
        t.send(message("a@example.net"))
    assert len(p.sends) == 1  # never retried: pointless, or it might deliver twice
    assert SECRET not in str(raised.value) and SECRET not in caplog.text


def test_unreachable_endpoint_is_retried_then_retryable(ses: MotoServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with transport(closed, max_attempts=3) as t, pytest.raises(
        RetryableDeliveryError, match=r"EndpointConnectionError.*after 3 attempt"
    ) as raised:
        t.send(message("a@example.net"))
    assert SECRET not in str(raised.value)


def test_missing_credentials_hand_the_batch_back_without_retrying(
    ses: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with transport() as t, pytest.raises(RetryableDeliveryError,
                                         match=r"NoCredentialsError.*after 1 attempt"):
        t.send(message("a@example.net"))


def test_send_rate_holds_a_burst_back(ses: MotoServer) -> None:
    """20 recipients a second with a bucket of 20: 30 one-recipient sends need >= 0.5 s."""
    start = time.monotonic()
    with transport(max_send_rate=20.0) as t:
        for n in range(30):
            t.send(message(f"r{n}@example.net", message_id=f"m{n}"))
    assert time.monotonic() - start >= 0.45
    assert len(ses.sent_raw_messages()) == 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_charges_one_token_per_recipient() -> None:
    clock = FakeClock()
    limiter = SendRateLimiter(10, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire(2)  # the full bucket of 10 pays for these
    assert clock.slept == []
    limiter.acquire(3)
    assert clock.slept == [pytest.approx(0.3)]


def test_limiter_refills_with_time_but_never_above_the_burst() -> None:
    clock = FakeClock()
    limiter = SendRateLimiter(10, burst=5, clock=clock, sleep=clock.sleep)
    limiter.acquire(5)
    clock.now += 60  # idle for a minute: still only 5 tokens
    limiter.acquire(5)
    limiter.acquire(1)
    assert clock.slept == [pytest.approx(0.1)]


def test_limiter_lets_a_message_larger_than_the_burst_through_and_pays_it_back() -> None:
    clock = FakeClock()
    limiter = SendRateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.acquire(50)  # a full bucket, then 40 tokens in debt
    limiter.acquire(1)
    assert sum(clock.slept) == pytest.approx(4.1)


@pytest.mark.parametrize(
    "value", ["msg-1", "a_b", "__", "order.42:x", "A" * 128, ".:_" * 42, "-", "a._.:"]
)
def test_tag_encoding_round_trips_within_the_ses_alphabet(value: str) -> None:
    encoded = encode_tag_value(value)
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in encoded)
    assert len(encoded) <= 256
    assert decode_tag_value(encoded) == value


@pytest.mark.parametrize("value", ["a/b", "é", "a b"])
def test_tag_encoding_refuses_what_no_request_id_holds(value: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_tag_value(value)


@pytest.mark.parametrize("tag", ["a_", "a_x", "a.b", "_"])
def test_tag_decoding_refuses_what_encoding_cannot_produce(tag: str) -> None:
    with pytest.raises(ValueError, match="not an encoded"):
        decode_tag_value(tag)


def test_concurrent_sends_share_one_client_and_one_rate(ses: MotoServer) -> None:
    """8 sends at once, 40 recipients at 40 a second with a bucket of 40: all arrive, and
    the limiter still holds the total to the rate (the 40 after the burst need ~1 s)."""
    with transport(max_send_rate=40.0, concurrency=8) as t:
        assert t.concurrency == 8
        start = time.monotonic()
        with ThreadPoolExecutor(8) as threads:
            results = list(threads.map(
                t.send, [message(f"r{n}@example.net", message_id=f"m{n}") for n in range(80)]))
        elapsed = time.monotonic() - start
    assert len({r.provider_message_id for r in results}) == 80
    assert len(ses.sent_raw_messages()) == 80
    assert elapsed >= 0.9


def test_limiter_holds_threads_together_to_the_rate() -> None:
    """8 threads take 60 tokens from a bucket of 10 refilled at 100 a second: the burst goes at
    once, the other 50 wait 0.5 s between them. The clock moves only when the limiter sleeps, so
    the figures do not depend on how fast the machine schedules the threads."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = SendRateLimiter(100, burst=10, clock=lambda: now[0], sleep=sleep)
    with ThreadPoolExecutor(8) as threads:
        waits = list(threads.map(lambda _n: limiter.acquire(1), range(60)))
    assert sum(1 for w in waits if w == 0) == 10, "only the burst went through without waiting"
    assert now[0] == pytest.approx(0.5)
    assert sum(waits) == pytest.approx(0.5)


def test_an_ses_bounce_maps_back_to_its_request_and_is_forwarded(peer) -> None:
    """What bounce forwarding needs rides on the SES send itself: the tags SES copies into every
    event of the message name the service and request, the event names the recipient."""
    from datetime import timedelta

    from notify_pipeline.analytics.alerts import forwarding_requests
    from notify_pipeline.analytics.store import Bounce
    from notify_pipeline.provider_events.ses import normalise
    from notify_pipeline.registry import AdvancedOptions, load_registry
    from notify_pipeline.request import parse_request
    from tests.helpers import REGISTRY, ses_event

    p = peer()
    with transport(p.url, configuration_set="notify-main") as t:
        result = t.send(message("gone@example.net", message_id="order.42:a_b"))
    [request] = p.sends
    record = ses_event("bounce", ses_id=result.provider_message_id,
                       recipients=("gone@example.net",))
    record["mail"]["tags"] = {tag["Name"]: [tag["Value"]] for tag in request["EmailTags"]}

    [event] = normalise(record, suppress_for=timedelta(days=90)).events
    assert (event.service, event.message_id, event.recipient, event.event_type) == (
        "lookup-notices", "order.42:a_b", "gone@example.net", "bounce")
    assert event.provider_message_id == result.provider_message_id
    assert event.bounce_type == "Permanent"

    service = load_registry(REGISTRY)["lookup-notices"].model_copy(
        update={"advanced": AdvancedOptions(bounce_forwarding=("ops@example.org",))})
    bounce = Bounce(event.event_id, event.message_id, event.recipient, event.occurred_at,
                    event.bounce_subtype, event.reason, event.subject)
    [forward] = forwarding_requests(service, [bounce])
    assert forward["id"] == f"bounce-fwd-{event.event_id}"
    assert forward["to"] == ["ops@example.org"] and forward["service"] == "notify-alerts"
    assert "Message id: order.42:a_b" in forward["text"]
    assert "Recipient: gone@example.net" in forward["text"]
    parse_request(json.dumps({**forward, "identity_token": "t"}).encode())  # a valid request
