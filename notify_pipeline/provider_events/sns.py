"""Is this SNS envelope really from Amazon SNS, for a topic we subscribed to?

Follows AWS's "Verifying the signatures of Amazon SNS messages": the string to sign is the
message's name/value pairs for its type, each as "Name\\nValue\\n" in byte order;
`SignatureVersion` 1 is SHA1withRSA, 2 is SHA256withRSA (PKCS#1 v1.5). The certificate is only
fetched from `https://sns.<region>.amazonaws.com[.cn]/...pem` for an allowed region, over HTTPS,
so the TLS certificate of the AWS host vouches for it, and only for a topic on the allow-list.

A forged or unverifiable envelope raises `UntrustedNotification` with a `Forgery` reason: it will
never verify, so callers drop it. A certificate that cannot be fetched right now (timeout, 5xx)
raises `CertificateUnavailable`: the message may be genuine, so callers keep it for later.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from notify_pipeline.errors import ConfigError, NotifyError
from notify_pipeline.http import retrying_session

# The fields each message type signs, in byte order (AWS docs). Only Subject is optional.
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}
_OPTIONAL = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_MAX_CERT_BYTES = 64 * 1024


class Forgery(StrEnum):
    """Why an envelope was refused."""

    MALFORMED = "malformed"
    UNSUPPORTED_TYPE = "unsupported_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TOPIC = "unknown_topic"
    UNTRUSTED_CERT_URL = "untrusted_cert_url"
    CERT_REJECTED = "cert_rejected"
    BAD_SIGNATURE = "bad_signature"


class UntrustedNotification(NotifyError, ValueError):
    """Forged or unverifiable: drop it, it will never verify. `reason` says why."""

    def __init__(self, reason: Forgery, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


class CertificateUnavailable(NotifyError):
    """The signing certificate could not be fetched now: keep the message and try again later."""


@dataclass(frozen=True)
class SnsEnvelope:
    """A verified SNS message: its type, topic and payload."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    subscribe_url: str | None = None


def parse(body: str | bytes) -> dict[str, str]:
    """The envelope's fields; `UntrustedNotification` unless it has every field its type signs."""
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise UntrustedNotification(Forgery.MALFORMED, "not JSON") from e
    if not isinstance(fields, dict):
        raise UntrustedNotification(Forgery.MALFORMED, "not a JSON object")
    kind = fields.get("Type")
    if kind not in SIGNED_FIELDS:
        raise UntrustedNotification(Forgery.UNSUPPORTED_TYPE, f"Type {kind!r}")
    names = (*SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL")
    bad = [n for n in names if not isinstance(fields.get(n, "" if n in _OPTIONAL else None), str)]
    if bad:
        raise UntrustedNotification(Forgery.MALFORMED, f"missing or not text: {', '.join(bad)}")
    return fields


def string_to_sign(fields: dict[str, str]) -> bytes:
    """The canonical form SNS signs for this message type."""
    names = SIGNED_FIELDS[fields["Type"]]
    return "".join(f"{n}\n{fields[n]}\n" for n in names if n in fields).encode("utf-8")


class CertificateFetcher:
    """Fetches signing certificates with a timeout and bounded retries.

    `base_url` is for tests only: the certificate URL still has to pass every check, and then its
    path is fetched from `base_url` (a server on 127.0.0.1) instead of the SNS host.
    """

    def __init__(
        self, *, timeout: float = 5.0, retries: int = 2, base_url: str | None = None
    ) -> None:
        self.timeout, self.base_url = timeout, base_url
        self._session = retrying_session(retries=retries, backoff_seconds=0.2,
                                         raise_on_status=False)

    def fetch(self, url: str) -> bytes:
        """The certificate's bytes; `UntrustedNotification` if the server refuses to give it."""
        if self.base_url:
            url = urljoin(self.base_url, urlsplit(url).path.lstrip("/"))
        try:
            with self._session.get(url, timeout=self.timeout, allow_redirects=False,
                                   stream=True) as response:
                status = response.status_code
                body = response.raw.read(_MAX_CERT_BYTES + 1, decode_content=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise CertificateUnavailable(f"cannot fetch {url}: {type(e).__name__}") from e
        if status >= 500 or status == 429:
            raise CertificateUnavailable(f"cannot fetch {url}: HTTP {status}")
        if status != 200 or len(body) > _MAX_CERT_BYTES:
            raise UntrustedNotification(
                Forgery.CERT_REJECTED, f"{url}: HTTP {status}, {len(body)} bytes"
            )
        return bytes(body)


class SnsVerifier:
    """Verifies envelopes for an allow-list of topics, signed by SNS in allowed regions.

    Public keys are cached per certificate URL (SNS rotates certificates rarely, and loading a
    PEM costs far more than a verification).
    """

    def __init__(
        self,
        *,
        allowed_topic_arns: Iterable[str],
        allowed_regions: Iterable[str],
        fetcher: CertificateFetcher | None = None,
        cache_size: int = 32,
    ) -> None:
        self.allowed_topic_arns = frozenset(allowed_topic_arns)
        regions = frozenset(allowed_regions)
        if not self.allowed_topic_arns:
            raise ConfigError("NOTIFY_SNS_TOPIC_ARNS", "name at least one SNS topic ARN")
        if not regions:
            raise ConfigError("NOTIFY_SNS_REGIONS", "name at least one AWS region")
        self.cert_hosts = frozenset(
            f"sns.{region}.amazonaws.com{suffix}" for region in regions for suffix in ("", ".cn")
        )
        self.fetcher = fetcher or CertificateFetcher()
        self._cache_size = cache_size
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def verify(self, body: str | bytes) -> SnsEnvelope:
        """The envelope, once every check passed; raises `UntrustedNotification` otherwise."""
        fields = parse(body)
        algorithm = _HASHES.get(fields["SignatureVersion"])
        if algorithm is None:
            raise UntrustedNotification(
                Forgery.UNSUPPORTED_VERSION, f"SignatureVersion {fields['SignatureVersion']!r}"
            )
        if fields["TopicArn"] not in self.allowed_topic_arns:
            raise UntrustedNotification(Forgery.UNKNOWN_TOPIC, f"topic {fields['TopicArn']!r}")
        self.check_cert_url(fields["SigningCertURL"])
        key = self._public_key(fields["SigningCertURL"])
        _check_signature(key, fields, algorithm())
        return SnsEnvelope(
            type=fields["Type"], message_id=fields["MessageId"], topic_arn=fields["TopicArn"],
            message=fields["Message"], timestamp=fields["Timestamp"],
            subscribe_url=fields.get("SubscribeURL"),
        )

    def check_cert_url(self, url: str) -> None:
        """HTTPS, default port, no credentials or query, a .pem on an allowed SNS host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UntrustedNotification(Forgery.UNTRUSTED_CERT_URL, "unparseable URL") from e
        trusted = (
            parts.scheme == "https" and port is None and parts.hostname in self.cert_hosts
            and not (parts.username or parts.password or parts.query or parts.fragment)
            and parts.path.endswith(".pem")
        )
        if not trusted:
            raise UntrustedNotification(Forgery.UNTRUSTED_CERT_URL, f"SigningCertURL {url!r}")

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._keys.get(url)
        if key is None:
            key = _rsa_key(self.fetcher.fetch(url), url)
            with self._lock:
                if len(self._keys) >= self._cache_size:
                    self._keys.pop(next(iter(self._keys)))  # oldest first
                self._keys[url] = key
        return key


def _rsa_key(pem: bytes, url: str) -> rsa.RSAPublicKey:
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as e:
        raise UntrustedNotification(Forgery.CERT_REJECTED, f"{url}: not a certificate") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise UntrustedNotification(Forgery.CERT_REJECTED, f"{url}: not an RSA key")
    return key


def _check_signature(
    key: rsa.RSAPublicKey, fields: dict[str, str], algorithm: hashes.HashAlgorithm
) -> None:
    try:
        signature = base64.b64decode(fields["Signature"], validate=True)
        key.verify(signature, string_to_sign(fields), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error) as e:
        raise UntrustedNotification(Forgery.BAD_SIGNATURE, "signature does not match") from e
