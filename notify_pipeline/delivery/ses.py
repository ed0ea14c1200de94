"""Amazon SES v2 transport: one `send_email` call with `Content.Raw` per message.

SES takes our DKIM-signed bytes unchanged. With raw content SES would read the recipients from the
To/Cc headers, which would lose Bcc, so the envelope recipients are always passed explicitly in
`Destination`. Delivery, bounces and complaints arrive later as SES events
(`notify_pipeline.provider_events`), joined back through the `service` and `message_id` tags.

Exactly-once hinges on one boundary, as for SMTP: a failure before the request reached SES is safe
to retry; a lost reply after it was sent (read timeout, connection reset) may hide an accepted
message, so it raises `AmbiguousHandoffError` and is never retried. botocore's own retries are
switched off so that this classification is the only retry policy.

Several hand-offs may run at once on one transport (see `SesTransport`). The account's
`MaxSendRate` is one limiter's: in process by default, or shared by every worker through the
ledger (`delivery.shared_rate`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from notify_pipeline import aws
from notify_pipeline.delivery.backoff import jittered_backoff
from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from notify_pipeline.limits import pool_configuration_set

logger = logging.getLogger(__name__)

SERVICE_TAG = "service"
MESSAGE_ID_TAG = "message_id"

# SES tag values allow only [A-Za-z0-9_-] (at most 256 characters); request ids may also hold "."
# and ":" (the wire format: `[A-Za-z0-9._:-]{1,128}`). "_" escapes, so the encoding is reversible
# and a 128-character id needs at most 256: "_" -> "__", "." -> "_d", ":" -> "_c".
_TAG_ESCAPES = {"_": "__", ".": "_d", ":": "_c"}
_TAG_UNESCAPES = {code[1]: char for char, code in _TAG_ESCAPES.items()}
_TAG_ENCODABLE = re.compile(r"[A-Za-z0-9._:-]*")
_TAG_ENCODED = re.compile(r"(?:[A-Za-z0-9-]|_[_dc])*")


def encode_tag_value(value: str) -> str:
    """`value` in the SES tag alphabet; `ValueError` for characters no request id may hold."""
    if not _TAG_ENCODABLE.fullmatch(value):
        raise ValueError(f"{value!r} holds characters outside [A-Za-z0-9._:-]")
    return "".join(_TAG_ESCAPES.get(char, char) for char in value)


def decode_tag_value(tag: str) -> str:
    """The inverse of `encode_tag_value`; `ValueError` for text it cannot have produced."""
    if not _TAG_ENCODED.fullmatch(tag):
        raise ValueError(f"{tag!r} is not an encoded tag value")
    return re.sub(r"_(.)", lambda m: _TAG_UNESCAPES[m.group(1)], tag)


class SesV2Client(Protocol):
    """The one call we make on a boto3 `sesv2` client."""

    def send_email(self, **kwargs: Any) -> dict[str, Any]: ...


class SendRate(Protocol):
    """What holds sends to the account's `MaxSendRate` (recipients a second)."""

    @property
    def rate(self) -> float: ...

    def acquire(self, cost: int) -> float:
        """Wait until `cost` recipients may be sent; returns the seconds waited."""
        ...


class SendRateLimiter:
    """SES `MaxSendRate` as a token bucket: `rate` recipients a second, bursts up to `burst`.

    SES counts every recipient of a message as one email, so a send costs its recipient count.
    A message with more recipients than `burst` waits for a full bucket and leaves it in debt.
    Thread-safe: concurrent senders queue for the bucket, and each waits its turn.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("max_send_rate must be positive")
        self.rate = rate
        self.burst = max(burst if burst is not None else rate, 1.0)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self, cost: int) -> float:
        """Take `cost` tokens, sleeping until they are there; returns the seconds slept."""
        with self._lock:
            self._refill()
            wait = max(0.0, (min(cost, self.burst) - self._tokens) / self.rate)
            if wait:
                self._sleep(wait)
                self._refill()
            self._tokens -= cost
            return wait

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now


class _Verdict(Enum):
    RETRY = "retry"  # nothing was accepted; another attempt in this run may succeed
    UNAVAILABLE = "unavailable"  # nothing was accepted; the account or deployment needs fixing
    PERMANENT = "permanent"  # nothing was accepted; this message will never be
    AMBIGUOUS = "ambiguous"  # SES may have accepted it


class SesTransport(Transport):
    """Delivers through Amazon SES v2 (`send_email` with raw content).

    Every message uses `configuration_set` (whose event destination feeds provider events),
    unless `service_configuration_sets` names one for its service, or it comes from a dedicated
    IP pool: then it is sent with the pool's own set (`limits.pool_configuration_set`), whose
    sending pool is that IP pool and whose event destination must feed provider events too.
    Up to `concurrency` sends may run at once: one boto3 client serves them all (boto3 clients
    are thread-safe), and one rate limiter (`limiter`, by default one of this transport's own
    at `max_send_rate`) holds them all to the account's rate.

    SES errors, by what to do next (the codes are in the class's tables):
    - throttling (`TooManyRequestsException`, `Throttling`, `LimitExceededException`, any 429)
      and 5xx: retried here with exponential backoff and jitter, then `RetryableDeliveryError`.
    - the message itself is refused (`BadRequestException`, `MessageRejected` - which includes an
      unverified From identity - and `MailFromDomainNotVerifiedException`, a per-domain setting):
      `PermanentDeliveryError`, never retried; the pipeline records `failure`.
    - the account or deployment is unusable (`AccountSuspendedException`,
      `SendingPausedException`, `NotFoundException` for a missing configuration set, unknown
      4xx such as bad credentials): `RetryableDeliveryError` at once. Retrying within seconds
      cannot help, and failing the message would fail every message of the batch for an
      operator's problem; handed back, the batch waits and fails only after the pipeline's
      bounded number of attempts.
    """

    reports_delivery = False

    _THROTTLING = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException",
                             "LimitExceededException"})
    _PERMANENT = frozenset({"BadRequestException", "MessageRejected",
                            "MailFromDomainNotVerifiedException", "InvalidParameterValue"})

    def __init__(
        self,
        *,
        client: SesV2Client,
        configuration_set: str | None,
        max_send_rate: float,
        concurrency: int = 1,
        service_configuration_sets: Mapping[str, str] | None = None,
        limiter: SendRate | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.configuration_set = configuration_set
        self.service_configuration_sets = dict(service_configuration_sets or {})
        self.max_attempts = max_attempts
        self.backoff_seconds, self.max_backoff_seconds = backoff_seconds, max_backoff_seconds
        self.limiter: SendRate = limiter or SendRateLimiter(max_send_rate, sleep=sleep)
        self._client = client
        self._sleep = sleep

    @classmethod
    def from_config(
        cls,
        *,
        region: str,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        **kwargs: Any,
    ) -> SesTransport:
        """Build the boto3 client (see `notify_pipeline.aws`), with a connection per send."""
        ses = aws.client(
            "sesv2", region=region, endpoint_url=endpoint_url, connect_timeout=connect_timeout,
            read_timeout=read_timeout, max_attempts=1,
            max_pool_connections=max(10, int(kwargs.get("concurrency", 1))),
        )
        return cls(client=ses, **kwargs)

    def __repr__(self) -> str:
        return (f"SesTransport(configuration_set={self.configuration_set!r}, "
                f"max_send_rate={self.limiter.rate}, concurrency={self.concurrency})")

    def send(self, message: OutgoingMessage) -> HandoffResult:
        """Hand `message` to SES; every recipient is ACCEPTED when SES returns a MessageId."""
        recipients = list(dict.fromkeys(message.recipients))
        request = self._request(message, recipients)
        response = self._call(request, message, cost=len(recipients))
        return HandoffResult.all_accepted(str(response["MessageId"]), recipients)

    def _request(self, message: OutgoingMessage, recipients: list[str]) -> dict[str, Any]:
        try:
            tags = [
                {"Name": SERVICE_TAG, "Value": encode_tag_value(message.service)},
                {"Name": MESSAGE_ID_TAG, "Value": encode_tag_value(message.message_id)},
            ]
        except ValueError as e:
            raise PermanentDeliveryError(f"SES: cannot tag the message: {e}") from e
        request: dict[str, Any] = {
            "FromEmailAddress": message.envelope_from,
            "Destination": {"ToAddresses": recipients},
            "Content": {"Raw": {"Data": message.data}},
            "EmailTags": tags,
        }
        configuration_set = self.service_configuration_sets.get(message.service)
        if configuration_set is None and message.ip_pool:
            configuration_set = pool_configuration_set(message.ip_pool)
        configuration_set = configuration_set or self.configuration_set
        if configuration_set:
            request["ConfigurationSetName"] = configuration_set
        return request

    def _call(self, request: dict[str, Any], message: OutgoingMessage, cost: int) -> dict[str, Any]:
        """`send_email` with bounded retries for throttling and failures before hand-off."""
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire(cost)
            try:
                return self._client.send_email(**request)
            except (ClientError, BotoCoreError) as e:
                verdict, detail = self._classify(e)
                if verdict is _Verdict.PERMANENT:
                    raise PermanentDeliveryError(f"SES refused the message: {detail}") from e
                if verdict is _Verdict.AMBIGUOUS:
                    raise AmbiguousHandoffError(f"SES may have accepted it: {detail}") from e
                if verdict is _Verdict.UNAVAILABLE or attempt == self.max_attempts:
                    raise RetryableDeliveryError(
                        f"SES unavailable: {detail} (after {attempt} attempt(s))") from e
                self._log_retry(message, attempt, detail)
                self._sleep(self._backoff(attempt))

    @classmethod
    def _classify(cls, e: ClientError | BotoCoreError) -> tuple[_Verdict, str]:
        """What an SDK error means for this message, and a sentence without credentials."""
        if isinstance(e, ClientError):
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = f"{status} {code}: {error.get('Message', '')}".strip()
            if code in cls._THROTTLING or status == 429 or status >= 500:
                return _Verdict.RETRY, detail
            if code in cls._PERMANENT:
                return _Verdict.PERMANENT, detail
            return _Verdict.UNAVAILABLE, detail
        detail = f"{type(e).__name__}: {e}"
        if isinstance(e, BotoConnectionError):  # connect, TLS or proxy failure: nothing was sent
            return _Verdict.RETRY, detail
        if isinstance(e, HTTPClientError):  # read timeout or reset after the request went out
            return _Verdict.AMBIGUOUS, detail
        return _Verdict.UNAVAILABLE, detail  # e.g. no credentials: an operator's problem

    def _backoff(self, attempt: int) -> float:
        return jittered_backoff(attempt, base=self.backoff_seconds, cap=self.max_backoff_seconds)

    def _log_retry(self, message: OutgoingMessage, attempt: int, detail: str) -> None:
        logger.warning(
            "SES: attempt %d/%d for %s/%s failed, retrying: %s",
            attempt, self.max_attempts, message.service, message.message_id, detail,
            extra={"service": message.service, "message_id": message.message_id},
        )
