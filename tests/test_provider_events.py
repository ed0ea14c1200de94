"""SES events: SNS signature verification, normalisation, and the SNS → SQS → ledger flow.

moto never publishes SES events, so the tests are SES's event publisher: genuine SES records
(tests/data/ses_events, AWS documentation format) go out two ways, and both are verified for real:
- published to moto's SNS topic, which delivers its own signed envelope to the SQS queue (moto
  signs with a throwaway certificate that `SnsCertServer` relays from moto);
- wrapped in envelopes signed by this session's test certificate and put straight on the queue,
  as SNS would deliver them (SignatureVersion 1 and 2, forged variants).
In both, the certificate URL names the SNS host of an allowed region; only the fetch goes to
127.0.0.1 (`CertificateFetcher(base_url=...)`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_pipeline.delivery.base import HandoffResult, RecipientOutcome, RecipientStatus
from notify_pipeline.events import EVENT_COLUMNS, BounceType, EventType
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.message import Envelope
from notify_pipeline.provider_events.intake import Fate, record_push
from notify_pipeline.provider_events.ses import MalformedEvent, normalise
from notify_pipeline.provider_events.sns import (
    CertificateFetcher,
    CertificateUnavailable,
    Forgery,
    SnsVerifier,
    UntrustedNotification,
)
from notify_pipeline.provider_events.sqs import SqsEventSource
from notify_pipeline.run.outcomes import handoff_events
from tests.conftest import free_port
from tests.emulators.moto import (
    ACCOUNT,
    REGION,
    TEST_CERT_NAME,
    MotoServer,
    SnsCertServer,
    TestSigner,
)
from tests.helpers import SES_DETAILS, SES_EVENTS, SES_ID
from tests.helpers import ses_event as sample

TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:ses-events"
SUPPRESS_FOR = timedelta(days=90)
BOUNCED_AT = datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)  # bounce.json's own timestamp


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def verifier(sns_certs: SnsCertServer) -> SnsVerifier:
    fetcher = CertificateFetcher(base_url=sns_certs.base_url, timeout=2.0)
    return SnsVerifier(allowed_topic_arns={TOPIC}, allowed_regions={REGION}, fetcher=fetcher)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    opened = SqliteLedger(tmp_path / "ledger.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def queue(aws_env: MotoServer) -> str:
    """The SQS queue subscribed (raw delivery off) to the SES event topic in moto."""
    topic, url = aws_env.queue_for_topic("ses-events")
    assert topic == TOPIC
    return url


@pytest.fixture
def source(aws_env: MotoServer, queue: str, verifier: SnsVerifier,
           ledger: SqliteLedger) -> SqsEventSource:
    return SqsEventSource.from_config(region=REGION, queue_url=queue, verifier=verifier,
                                      ledger=ledger, suppress_for=SUPPRESS_FOR, wait_seconds=0)


@pytest.fixture
def put(aws_env: MotoServer, queue: str, sns_signer: TestSigner) -> Callable[..., dict[str, str]]:
    """Put an envelope signed by the test certificate on the queue, as SNS delivers it."""
    sqs = aws_env.client("sqs")

    def send(record: dict[str, Any] | str, *, envelope: dict[str, str] | None = None,
             **options: Any) -> dict[str, str]:
        text = record if isinstance(record, str) else json.dumps(record)
        envelope = envelope or sns_signer.envelope(text, topic_arn=options.pop("topic", TOPIC),
                                                   **options)
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(envelope))
        return envelope

    return send


def outbox(ledger: SqliteLedger) -> list[Any]:
    return [event for _seq, event in ledger.pending_events(1000)]


def queue_depth(moto: MotoServer, queue: str) -> int:
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages",
                                        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"])


# --- SNS signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("kind", ["Notification", "SubscriptionConfirmation"])
def test_genuine_envelopes_verify(verifier: SnsVerifier, sns_signer: TestSigner,
                                  version: str, kind: str) -> None:
    subject = "a subject" if kind == "Notification" else None  # signed when present
    envelope = sns_signer.envelope('{"eventType": "Send"}', topic_arn=TOPIC, version=version,
                                   kind=kind, subject=subject)
    verified = verifier.verify(json.dumps(envelope))
    assert (verified.type, verified.topic_arn, verified.message) == (kind, TOPIC,
                                                                     envelope["Message"])


def tampered(envelope: dict[str, str]) -> dict[str, str]:
    return {**envelope, "Message": envelope["Message"].replace("Send", "Bounce")}


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (tampered, Forgery.BAD_SIGNATURE),
        (lambda e: {**e, "Signature": "bm90IGEgc2lnbmF0dXJl"}, Forgery.BAD_SIGNATURE),
        (lambda e: {**e, "Signature": "***"}, Forgery.BAD_SIGNATURE),
        (lambda e: {**e, "TopicArn": TOPIC + "-other"}, Forgery.UNKNOWN_TOPIC),
        (lambda e: {**e, "SignatureVersion": "3"}, Forgery.UNSUPPORTED_VERSION),
        (lambda e: {**e, "Type": "Surprise"}, Forgery.UNSUPPORTED_TYPE),
        (lambda e: {k: v for k, v in e.items() if k != "Signature"}, Forgery.MALFORMED),
        (lambda e: {**e, "Timestamp": 12}, Forgery.MALFORMED),
    ],
)
def test_forged_envelopes_are_refused_with_their_reason(
    verifier: SnsVerifier, sns_signer: TestSigner, forge: Any, reason: Forgery
) -> None:
    envelope = forge(sns_signer.envelope('{"eventType": "Send"}', topic_arn=TOPIC))
    with pytest.raises(UntrustedNotification) as raised:
        verifier.verify(json.dumps(envelope))
    assert raised.value.reason is reason


@pytest.mark.parametrize(
    "url",
    [
        f"https://evil.example.com/{TEST_CERT_NAME}",
        f"http://sns.{REGION}.amazonaws.com/{TEST_CERT_NAME}",
        f"https://sns.us-east-1.amazonaws.com/{TEST_CERT_NAME}",  # a region we do not use
        f"https://sns.{REGION}.amazonaws.com.evil.example/{TEST_CERT_NAME}",
        f"https://sns.{REGION}.amazonaws.com:8443/{TEST_CERT_NAME}",
        f"https://user@sns.{REGION}.amazonaws.com/{TEST_CERT_NAME}",
        f"https://sns.{REGION}.amazonaws.com/{TEST_CERT_NAME}?x=1",
        f"https://sns.{REGION}.amazonaws.com/cert.txt",
        "https://[broken/",
    ],
)
def test_certificate_urls_off_the_sns_hosts_are_never_fetched(
    verifier: SnsVerifier, sns_signer: TestSigner, sns_certs: SnsCertServer, url: str
) -> None:
    envelope = sns_signer.envelope("{}", topic_arn=TOPIC, cert_url=url)
    before = len(sns_certs.requests)
    with pytest.raises(UntrustedNotification) as raised:
        verifier.verify(json.dumps(envelope))
    assert raised.value.reason is Forgery.UNTRUSTED_CERT_URL
    assert len(sns_certs.requests) == before


def test_china_region_hosts_are_trusted_for_allowed_regions(sns_certs: SnsCertServer) -> None:
    verifier = SnsVerifier(allowed_topic_arns={TOPIC}, allowed_regions={"cn-north-1"})
    verifier.check_cert_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a.pem")
    with pytest.raises(UntrustedNotification):
        verifier.check_cert_url(f"https://sns.{REGION}.amazonaws.com/{TEST_CERT_NAME}")


def test_a_certificate_the_host_does_not_have_is_refused(
    verifier: SnsVerifier, sns_signer: TestSigner
) -> None:
    url = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-unknown.pem"
    envelope = sns_signer.envelope("{}", topic_arn=TOPIC, cert_url=url)
    with pytest.raises(UntrustedNotification) as raised:
        verifier.verify(json.dumps(envelope))
    assert raised.value.reason is Forgery.CERT_REJECTED


def test_certificates_are_fetched_once_then_cached(
    verifier: SnsVerifier, sns_signer: TestSigner, sns_certs: SnsCertServer
) -> None:
    before = len(sns_certs.requests)
    for _ in range(3):
        verifier.verify(json.dumps(sns_signer.envelope("{}", topic_arn=TOPIC)))
    assert len(sns_certs.requests) == before + 1


def test_an_unreachable_certificate_host_is_a_reason_to_wait_not_to_refuse(
    sns_signer: TestSigner,
) -> None:
    fetcher = CertificateFetcher(base_url=f"http://127.0.0.1:{free_port()}/", timeout=0.5,
                                 retries=1)
    verifier = SnsVerifier(allowed_topic_arns={TOPIC}, allowed_regions={REGION}, fetcher=fetcher)
    with pytest.raises(CertificateUnavailable):
        verifier.verify(json.dumps(sns_signer.envelope("{}", topic_arn=TOPIC)))


def test_an_empty_allow_list_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="TOPIC_ARNS"):
        SnsVerifier(allowed_topic_arns=[], allowed_regions={REGION})


# --- normalisation -------------------------------------------------------------------------

EXPECTED = {
    # sample: (event type, reason, bounce type, suppression reason)
    "send": (EventType.SEND, None, None, None),
    "delivery": (EventType.DELIVERY, None, None, None),
    "bounce": (EventType.BOUNCE, "smtp; 550 5.1.1 user unknown", BounceType.PERMANENT, "bounce"),
    "complaint": (EventType.COMPLAINT, "abuse", None, "complaint"),
    "delivery_delay": (EventType.DELIVERY_DELAY,
                       "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to "
                       "remote host", None, None),
    "reject": (EventType.FAILURE, "ses_reject: Bad content", None, None),
    "rendering_failure": (EventType.FAILURE, "rendering_failure: Attribute 'attributeName' is not"
                          " present in the rendering data.", None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recorded_event_type_becomes_one_row(name: str) -> None:
    record = json.loads((SES_EVENTS / f"{name}.json").read_text())
    result = normalise(record, suppress_for=SUPPRESS_FOR)
    kind, reason, bounce_type, suppression = EXPECTED[name]
    [event] = result.events
    assert (event.event_type, event.reason, event.bounce_type) == (kind, reason, bounce_type)
    assert (event.service, event.message_id, event.recipient) == (
        "lookup-notices", "msg-1", "recipient@example.com")
    assert event.provider_message_id == record["mail"]["messageId"]
    own_time = record.get(SES_DETAILS.get(record["eventType"], ""), {}).get("timestamp")
    assert event.occurred_at == datetime.fromisoformat(
        (own_time or record["mail"]["timestamp"]).replace("Z", "+00:00"))
    assert [s.reason for s in result.suppressions] == ([suppression] if suppression else [])
    assert result.raw is record
    assert set(event.row(datetime.now(UTC))) == set(EVENT_COLUMNS)  # no room for the raw record


@pytest.mark.parametrize("name", ["open", "click", "subscription"])
def test_engagement_and_subscription_events_are_ignored_on_purpose(name: str) -> None:
    record = json.loads((SES_EVENTS / f"{name}.json").read_text())
    result = normalise(record, suppress_for=SUPPRESS_FOR)
    assert (result.events, result.ignored) == ((), record["eventType"])


def test_an_unknown_event_type_is_ignored_and_named() -> None:
    result = normalise({"eventType": "Teleported", "mail": {}}, suppress_for=SUPPRESS_FOR)
    assert (result.events, result.ignored) == ((), "unknown:Teleported")


@pytest.mark.parametrize(
    "record",
    [{}, {"eventType": "Bounce"}, {"eventType": "Delivery", "mail": {"timestamp": "yesterday"}},
     {"eventType": "Bounce", "mail": {"messageId": "x", "timestamp": "2020-01-01T00:00:00"},
      "bounce": {"bouncedRecipients": []}}],
)
def test_unreadable_records_are_malformed(record: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        normalise(record, suppress_for=SUPPRESS_FOR)


def test_bounce_yields_one_row_and_one_suppression_per_bounced_recipient() -> None:
    record = sample("bounce", recipients=("a@example.net", "B@Example.net"))
    result = normalise(record, suppress_for=SUPPRESS_FOR)
    assert [e.recipient for e in result.events] == ["a@example.net", "B@Example.net"]
    assert len({e.event_id for e in result.events}) == 2
    assert [s.recipient for s in result.suppressions] == ["a@example.net", "b@example.net"]
    assert all(s.expires_at == BOUNCED_AT + SUPPRESS_FOR for s in result.suppressions)


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_soft_bounces_do_not_suppress(bounce_type: str) -> None:
    record = sample("bounce", bounceType=bounce_type, bounceSubType="MailboxFull")
    result = normalise(record, suppress_for=SUPPRESS_FOR)
    assert result.events[0].bounce_type == BounceType(bounce_type)
    assert result.events[0].bounce_subtype == "MailboxFull"
    assert result.suppressions == ()


def test_the_message_id_tag_is_decoded() -> None:
    result = normalise(sample("delivery", message_id="order.42:a_b"), suppress_for=SUPPRESS_FOR)
    assert result.events[0].message_id == "order.42:a_b"


def test_mail_we_did_not_tag_is_kept_but_unattributed() -> None:
    record = sample("delivery")
    del record["mail"]["tags"]["service"]
    record["mail"]["tags"]["message_id"] = ["not_valid"]
    [event] = normalise(record, suppress_for=SUPPRESS_FOR).events
    assert (event.service, event.message_id) == (None, None)


def test_event_ids_are_stable_and_tell_distinct_events_apart() -> None:
    def ids(record: dict[str, Any]) -> list[str]:
        return [e.event_id for e in normalise(record, suppress_for=SUPPRESS_FOR).events]

    assert ids(sample("bounce")) == ids(sample("bounce"))
    assert ids(sample("bounce")) != ids(sample("bounce", feedbackId="another-feedback"))
    first_delay = sample("delivery_delay")
    second_delay = sample("delivery_delay", timestamp="2020-06-16T01:25:40.095Z")
    assert ids(first_delay) != ids(second_delay)
    assert ids(sample("delivery")) != ids(sample("delivery", ses_id="another-ses-message"))


def test_ses_send_is_the_same_event_as_the_pipelines_own_send_row() -> None:
    envelope = Envelope(service="lookup-notices", message_id="msg-1", from_display="L",
                        from_address="lookup@notify.example.org", to=("recipient@example.com",),
                        subject="s", text="t")
    handoff = HandoffResult(SES_ID, (RecipientOutcome("recipient@example.com",
                                                      RecipientStatus.ACCEPTED),))
    _state, ours, _ = handoff_events(envelope, handoff, reports_delivery=False,
                                     at=datetime.now(UTC), suppress_for=SUPPRESS_FOR)
    [from_ses] = normalise(sample("send"), suppress_for=SUPPRESS_FOR).events
    assert [e.event_type for e in ours] == [EventType.SEND]  # SES reports delivery itself
    assert from_ses.event_id == ours[0].event_id


# --- SNS → SQS → ledger --------------------------------------------------------------------

ALL_SAMPLES = sorted(p.stem for p in SES_EVENTS.glob("*.json"))


def test_every_event_type_published_through_moto_sns_reaches_the_ledger(
    aws_env: MotoServer, queue: str, source: SqsEventSource, ledger: SqliteLedger
) -> None:
    sns = aws_env.client("sns")
    for n, name in enumerate(ALL_SAMPLES):
        record = sample(name, ses_id=f"ses-{n}", message_id=f"msg-{name}")
        sns.publish(TopicArn=TOPIC, Message=json.dumps(record))  # moto signs this envelope

    summary = source.drain()

    assert summary.as_dict() == {
        "received": 10, "events": 7, "suppressions": 2, "forged": {}, "retry_later": 0,
        "ignored": {"Click": 1, "Open": 1, "Subscription": 1},
    }
    types = sorted(e.event_type.value for e in outbox(ledger))
    assert types == ["bounce", "complaint", "delivery", "delivery_delay", "failure", "failure",
                     "send"]
    assert ledger.suppressed({"recipient@example.com"}, now=BOUNCED_AT) == {
        "recipient@example.com"}  # for 90 days after the sample's bounce (in 2017)
    assert queue_depth(aws_env, queue) == 0


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_same_notification_twice_yields_the_same_event_ids(
    put, source: SqsEventSource, ledger: SqliteLedger, version: str
) -> None:
    record = sample("bounce", recipients=("a@example.net", "b@example.net"))
    envelope = put(record, version=version)
    put(record, envelope=envelope)  # SNS redelivers the very same envelope

    summary = source.drain()

    ids = [e.event_id for e in outbox(ledger)]
    assert (summary.received, len(ids), len(set(ids))) == (2, 4, 2)


def test_a_late_delivery_never_overwrites_a_bounce(put, source: SqsEventSource,
                                                  ledger: SqliteLedger) -> None:
    put(sample("bounce", recipients=("a@example.net",)))
    source.drain()
    put(sample("delivery", recipients=("a@example.net",)))
    put(sample("complaint", recipients=("a@example.net",)))
    source.drain()

    assert ledger.final_status("lookup-notices", "msg-1", "a@example.net") == "bounce"
    assert sorted(e.event_type.value for e in outbox(ledger)) == ["bounce", "complaint",
                                                                  "delivery"]


def test_a_complaint_after_delivery_is_recorded_and_suppresses(put, source: SqsEventSource,
                                                               ledger: SqliteLedger) -> None:
    put(sample("delivery", recipients=("c@example.net",)))
    put(sample("complaint", recipients=("c@example.net",), timestamp=now_iso()))
    source.drain()

    assert ledger.final_status("lookup-notices", "msg-1", "c@example.net") == "delivery"
    assert ledger.suppressed({"c@example.net"}, now=datetime.now(UTC)) == {"c@example.net"}


def test_forged_messages_are_counted_deleted_and_never_recorded(
    aws_env: MotoServer, queue: str, put, source: SqsEventSource,
    ledger: SqliteLedger, sns_signer: TestSigner, caplog: pytest.LogCaptureFixture,
) -> None:
    secret = sample("bounce", recipients=("victim@example.net",))
    put(secret, envelope=tampered(sns_signer.envelope(json.dumps(secret), topic_arn=TOPIC)))
    put(secret, cert_url=f"https://attacker.example.com/{TEST_CERT_NAME}")
    put(secret, topic=f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses")
    aws_env.client("sqs").send_message(QueueUrl=queue, MessageBody="not even JSON")
    put(sample("delivery", recipients=("fine@example.net",)))

    summary = source.drain()

    assert summary.forged == {"bad_signature": 1, "untrusted_cert_url": 1, "unknown_topic": 1,
                              "malformed": 1}
    assert [e.recipient for e in outbox(ledger)] == ["fine@example.net"]
    assert ledger.suppressed({"victim@example.net"}, now=datetime.now(UTC)) == set()
    assert queue_depth(aws_env, queue) == 0
    assert "victim@example.net" not in caplog.text


class CountingLedger(SqliteLedger):
    """The real SQLite ledger, counting transactions and optionally failing them."""

    def __init__(self, path: Path, *, fail: bool = False) -> None:
        super().__init__(path)
        self.transactions, self.fail = 0, fail

    def add_events(self, events: Any, suppressions: Any = ()) -> None:
        self.transactions += 1
        if self.fail:
            raise RuntimeError("the ledger is down")
        super().add_events(events, suppressions)


def test_each_sqs_batch_is_one_ledger_transaction_and_draining_is_bounded(
    aws_env: MotoServer, queue: str, put, verifier: SnsVerifier, tmp_path: Path
) -> None:
    ledger = CountingLedger(tmp_path / "counting.sqlite3")
    source = SqsEventSource.from_config(region=REGION, queue_url=queue, verifier=verifier,
                                        ledger=ledger, suppress_for=SUPPRESS_FOR, wait_seconds=0)
    for n in range(12):
        put(sample("delivery", ses_id=f"ses-{n}"))

    first = source.drain(max_batches=1)
    rest = source.drain()

    assert (first.received, first.events, ledger.transactions) == (10, 10, 2)
    assert rest.received == 2
    assert queue_depth(aws_env, queue) == 0


def test_nothing_is_deleted_unless_the_ledger_recorded_it(
    aws_env: MotoServer, queue: str, put, verifier: SnsVerifier, tmp_path: Path
) -> None:
    ledger = CountingLedger(tmp_path / "down.sqlite3", fail=True)
    source = SqsEventSource.from_config(region=REGION, queue_url=queue, verifier=verifier,
                                        ledger=ledger, suppress_for=SUPPRESS_FOR, wait_seconds=0)
    put(sample("delivery"))
    with pytest.raises(RuntimeError, match="ledger is down"):
        source.drain()
    assert queue_depth(aws_env, queue) == 1  # SQS delivers it again after the timeout


def test_messages_whose_certificate_is_unreachable_stay_on_the_queue(
    aws_env: MotoServer, queue: str, put, ledger: SqliteLedger
) -> None:
    fetcher = CertificateFetcher(base_url=f"http://127.0.0.1:{free_port()}/", timeout=0.5,
                                 retries=0)
    verifier = SnsVerifier(allowed_topic_arns={TOPIC}, allowed_regions={REGION}, fetcher=fetcher)
    source = SqsEventSource.from_config(region=REGION, queue_url=queue, verifier=verifier,
                                        ledger=ledger, suppress_for=SUPPRESS_FOR, wait_seconds=0)
    put(sample("delivery"))

    summary = source.drain()

    assert (summary.received, summary.retry_later, summary.events) == (1, 1, 0)
    assert queue_depth(aws_env, queue) == 1  # invisible for now, back after the timeout


def test_subscription_confirmations_are_verified_and_ignored(put, source: SqsEventSource,
                                                             ledger: SqliteLedger) -> None:
    put("You have chosen to subscribe...", kind="SubscriptionConfirmation")
    summary = source.drain()
    assert (summary.forged, summary.ignored, outbox(ledger)) == (
        {}, {"SubscriptionConfirmation": 1}, [])


def test_a_push_body_is_verified_normalised_and_recorded(
    verifier: SnsVerifier, sns_signer: TestSigner, ledger: SqliteLedger
) -> None:
    genuine = sns_signer.envelope(json.dumps(sample("complaint")), topic_arn=TOPIC)

    fate, summary = record_push(json.dumps(genuine), verifier=verifier, ledger=ledger,
                                suppress_for=SUPPRESS_FOR)
    forged_fate, forged = record_push(json.dumps(tampered(genuine)), verifier=verifier,
                                      ledger=ledger, suppress_for=SUPPRESS_FOR)

    assert (fate, summary.events, summary.suppressions) == (Fate.DONE, 1, 1)
    assert (forged_fate, forged.forged) == (Fate.DONE, {"bad_signature": 1})
    assert [e.event_type for e in outbox(ledger)] == [EventType.COMPLAINT]


# --- moto's gaps we rely on: these fail loudly when moto changes --------------------------


def test_moto_has_no_sesv2_event_destinations(aws_env: MotoServer) -> None:
    """Why tests publish SES events themselves: moto would never emit them."""
    ses = aws_env.client("sesv2")
    ses.create_configuration_set(ConfigurationSetName="notify")
    with pytest.raises(ses.exceptions.ClientError) as raised:
        ses.create_configuration_set_event_destination(
            ConfigurationSetName="notify", EventDestinationName="events",
            EventDestination={"Enabled": True, "MatchingEventTypes": ["DELIVERY"],
                              "SnsDestination": {"TopicArn": TOPIC}})
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_moto_leaves_the_subject_out_of_what_it_signs(
    aws_env: MotoServer, queue: str, source: SqsEventSource
) -> None:
    """Why tests publish to moto's SNS without a Subject (SES sets none either)."""
    aws_env.client("sns").publish(TopicArn=TOPIC, Message=json.dumps(sample("send")),
                                  Subject="hello")
    assert source.drain().forged == {"bad_signature": 1}
