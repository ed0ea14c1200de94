"""Caller identity: OIDC ID tokens of service accounts (RS256 JWTs).

Production tokens are signed by Google; the `local` profile runs its own issuer (`local_issuer`).
Both are verified by the same `TokenVerifier`: google-auth's RSA verifier (one per key, kept)
checks the signature; the claims are checked here, including what google-auth cannot judge:
expiry as of the time the inbox received the request, the issuer, and a verified email. A token
seen before (by digest) skips the signature check while its key is still published; its claims
are judged at every use. No
token, nor any part of one, ever appears in an exception or a log: google-auth's own exceptions
quote the token, so they are translated and never chained.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, exceptions, jwt

from notify_pipeline.defaults import GOOGLE_CERTS_URL, TOKEN_CLOCK_SKEW_SECONDS
from notify_pipeline.errors import NotifyError, RejectReason, RequestRejected
from notify_pipeline.http import retrying_session

_log = logging.getLogger(__name__)

# Algorithm names a rejection may repeat: a fixed vocabulary, never free text taken from a token.
_KNOWN_ALGORITHMS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256"}
    | {"ES384", "ES512", "EdDSA"}
)
_LAST_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z, the last instant a datetime can hold
_MAX_AGE = re.compile(r"max-age=(\d+)")


class CertsUnavailable(NotifyError):
    """The issuer's public keys could not be loaded: retry later, do not reject the request."""


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who signed a request, after every check passed."""

    email: str
    subject: str
    issuer: str


class CertSource(Protocol):
    def get_certs(self) -> Mapping[str, str]:
        """Current `{kid: PEM certificate or public key}`; raises `CertsUnavailable`."""
        ...


def parse_certs(document: object) -> dict[str, str]:
    """Read Google's v1 format `{kid: PEM}` or a JWKS into `{kid: PEM}` usable by google-auth.

    google-auth accepts PEM public keys as well as certificates, so RSA JWKs become public keys.
    Raises ValueError when the document holds no usable RSA key.
    """
    try:
        if isinstance(document, Mapping) and "keys" in document:
            certs = {jwk["kid"]: _jwk_to_pem(jwk) for jwk in document["keys"] if _is_rsa_jwk(jwk)}
        elif isinstance(document, Mapping):
            certs = {kid: _checked_pem(pem) for kid, pem in document.items()}
        else:
            raise ValueError("expected a JSON object")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed key set: {exc!r}") from exc
    if not certs:
        raise ValueError("the key set holds no RSA signing key")
    return certs


def _is_rsa_jwk(jwk: Mapping[str, Any]) -> bool:
    return (
        jwk.get("kty") == "RSA"
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", "RS256") == "RS256"
        and isinstance(jwk.get("kid"), str)
    )


def _jwk_to_pem(jwk: Mapping[str, Any]) -> str:
    n, e = (int.from_bytes(_b64url_decode(jwk[part]), "big") for part in ("n", "e"))
    key = rsa.RSAPublicNumbers(e, n).public_key()
    return _public_pem(key)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_decode_bytes(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


@functools.lru_cache(maxsize=64)
def _verifier_for(pem: str) -> crypt.RSAVerifier:
    """google-auth's verifier for one PEM certificate or public key, parsed once per process.
    Keyed by the PEM itself, so a rotated key set brings new verifiers."""
    verifier: crypt.RSAVerifier = crypt.RSAVerifier.from_string(pem)
    return verifier


def _checked_pem(pem: str) -> str:
    """Fail while loading the key set, not later as a misleading 'bad signature'."""
    data = pem.encode("ascii")
    if b"-----BEGIN CERTIFICATE-----" in data:
        key: object = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return pem


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


class FileCertSource:
    """A key set on disk (the local issuer's certs.json), re-read whenever the file is replaced."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._certs: dict[str, str] = {}

    def get_certs(self) -> Mapping[str, str]:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
            if stamp != self._stamp:
                self._certs = parse_certs(json.loads(self._path.read_bytes()))
                self._stamp = stamp
        except (OSError, ValueError) as exc:
            raise CertsUnavailable(f"could not load signing keys from {self._path}: {exc}") from exc
        return self._certs


class HttpCertSource:
    """A published key set (Google's by default), cached for as long as its `max-age` allows."""

    def __init__(
        self, url: str = GOOGLE_CERTS_URL, *, timeout: float = 10.0, retries: int = 2
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._session = retrying_session(retries=retries, backoff_seconds=0.5)
        self._lock = threading.Lock()
        self._certs: dict[str, str] = {}
        self._fresh_until = -math.inf

    def get_certs(self) -> Mapping[str, str]:
        with self._lock:  # one fetch at a time, not one per waiting verifier
            if time.monotonic() >= self._fresh_until:
                self._refresh()
            return self._certs

    def _refresh(self) -> None:
        try:
            response = self._session.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            certs = parse_certs(response.json())
        except (requests.RequestException, ValueError) as exc:
            raise CertsUnavailable(f"could not load signing keys from {self._url}: {exc}") from exc
        max_age = _max_age(response.headers.get("Cache-Control", ""))
        self._certs, self._fresh_until = certs, time.monotonic() + max_age
        _log.info("loaded %d signing keys from %s, cached for %ds", len(certs), self._url, max_age)


def _max_age(cache_control: str) -> int:
    """Seconds the response may be reused; 0 (fetch again next time) when the server is silent."""
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else 0


def _reject(sentence: str) -> RequestRejected:
    return RequestRejected(RejectReason.UNAUTHENTICATED, sentence)


# Tokens whose signature has been checked, remembered by digest: a client reuses one ID token
# for up to an hour, so most requests carry a token already seen. Small entries (two decoded
# claim sets and a key), so the bound is on the count.
VERIFIED_TOKENS = 1024


class TokenVerifier:
    """Checks ID tokens against one audience and a set of trusted issuers."""

    def __init__(
        self,
        *,
        certs: CertSource,
        audience: str,
        issuers: frozenset[str],
        clock_skew_seconds: int = TOKEN_CLOCK_SKEW_SECONDS,
    ) -> None:
        self._certs = certs
        self._audience = audience
        self._issuers = issuers
        self._skew = clock_skew_seconds
        # sha256 of a token -> its header, its payload, the key its signature matched
        self._verified: dict[bytes, tuple[Mapping[str, Any], Mapping[str, Any], str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenVerifier(audience={self._audience!r}, issuers={sorted(self._issuers)!r})"

    def verify(self, token: str | None, *, received_at: datetime) -> VerifiedIdentity:
        """The identity in `token`, judged as of `received_at` (an aware datetime).

        A token valid when the request arrived stays acceptable however late it is processed.
        Raises `RequestRejected(UNAUTHENTICATED)` for any fault in the token and `CertsUnavailable`
        when the keys cannot be loaded.
        """
        if received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        if not token:
            raise _reject("the request carries no identity_token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            seen = self._verified.get(digest)
        if seen is not None:
            header, payload, pem = seen
            if self._cert_for(header) == {header["kid"]: pem}:  # its key is still published
                return self._check_claims(payload, received_at)
        header, payload = _decode_unverified(token)
        if "crit" in header:  # RFC 7515 4.1.11: extensions we do not understand must fail
            raise _reject("the identity token's header lists critical extensions (crit)")
        cert = self._cert_for(header)
        _check_times_present(payload)
        self._check_signature(token, cert)
        self._remember(digest, header, payload, cert[header["kid"]])
        return self._check_claims(payload, received_at)

    def _remember(self, digest: bytes, header: Mapping[str, Any], payload: Mapping[str, Any],
                  pem: str) -> None:
        """Keep a checked signature; the claims are judged again at every use (`verify`)."""
        with self._lock:
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[digest] = (header, payload, pem)

    def _cert_for(self, header: Mapping[str, Any]) -> dict[str, str]:
        alg = header.get("alg")
        if alg != "RS256":
            named = isinstance(alg, str) and alg in _KNOWN_ALGORITHMS
            used = f"alg {alg!r}" if named else "an unrecognised algorithm"
            raise _reject(f"the identity token is signed with {used}; only RS256 is accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _reject("the identity token's header has no key id (kid)")
        certs = self._certs.get_certs()
        if kid not in certs:
            raise _reject("the identity token's key id is not one of the issuer's current keys")
        return {kid: certs[kid]}

    def _check_signature(self, token: str, cert: Mapping[str, str]) -> None:
        """The RS256 signature, checked by google-auth's `RSAVerifier` for the key, built once
        per key (`_verifier_for`): `jwt.decode` would re-parse the certificate for every token,
        which costs more than the check itself. Its `iat`/`exp`/`aud` checks are weaker than
        `_check_claims`, which judges them as of `received_at`. The rejection is raised outside
        `except` so no exception that quotes the token is attached to it.
        """
        (pem,) = cert.values()
        signed, _, signature = token.encode("ascii", "replace").rpartition(b".")
        try:
            if _verifier_for(pem).verify(signed, _b64url_decode_bytes(signature)):
                return
        except (exceptions.GoogleAuthError, ValueError, TypeError):
            pass
        raise _reject("the identity token's signature does not match the issuer's key")

    def _check_claims(self, payload: Mapping[str, Any], received_at: datetime) -> VerifiedIdentity:
        issuer = payload.get("iss")
        if not (isinstance(issuer, str) and issuer in self._issuers):
            trusted = ", ".join(sorted(self._issuers))
            raise _reject(f"the identity token's issuer is not trusted; expected one of {trusted}")
        if payload.get("aud") != self._audience:
            raise _reject(
                f"the identity token is for another audience; expected {self._audience!r}"
            )
        self._check_times(payload, received_at)
        email, subject = payload.get("email"), payload.get("sub")
        if not (isinstance(email, str) and email):
            raise _reject("the identity token carries no email claim")
        if payload.get("email_verified") is not True:
            raise _reject("the identity token's email is not verified (email_verified is not true)")
        if not (isinstance(subject, str) and subject):
            raise _reject("the identity token carries no subject (sub) claim")
        return VerifiedIdentity(email=email, subject=subject, issuer=issuer)

    def _check_times(self, payload: Mapping[str, Any], received_at: datetime) -> None:
        skew = timedelta(seconds=self._skew)
        issued = datetime.fromtimestamp(payload["iat"], UTC)
        expires = datetime.fromtimestamp(payload["exp"], UTC)
        received = received_at.astimezone(UTC)
        if issued > received + skew:
            raise _reject(
                f"the identity token was issued at {issued.isoformat()}, after the request was "
                f"received at {received.isoformat()}"
            )
        if expires < received - skew:
            raise _reject(
                f"the identity token expired at {expires.isoformat()}, before the request was "
                f"received at {received.isoformat()}"
            )
        if "nbf" in payload:  # google-auth ignores `nbf`
            not_before = datetime.fromtimestamp(payload["nbf"], UTC)
            if not_before > received + skew:
                raise _reject(
                    f"the identity token is not valid before {not_before.isoformat()}, after "
                    f"the request was received at {received.isoformat()}"
                )


def _decode_unverified(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Header and payload, unverified: only used to pick the key and to word rejections."""
    try:
        header = jwt.decode_header(token)
        return header, jwt.decode(token, verify=False)
    except (exceptions.GoogleAuthError, ValueError, RecursionError):
        pass
    raise _reject("the identity_token is not a JWT (three base64url JSON segments)")


def _check_times_present(payload: Mapping[str, Any]) -> None:
    """`iat`, `exp` (and `nbf` if given) as in-range numbers: NaN slips past every comparison,
    strings crash them."""
    for claim in ("iat", "exp", "nbf"):
        if claim == "nbf" and claim not in payload:
            continue
        value = payload.get(claim)
        in_range = isinstance(value, int | float) and 0 <= value <= _LAST_NUMERIC_DATE
        if isinstance(value, bool) or not in_range:
            raise _reject(f"the identity token has no valid {claim} claim (seconds since 1970)")
