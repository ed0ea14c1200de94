"""Caller identity: the local issuer, cert sources and the verifier, against forged tokens."""

# google-auth ships py.typed but leaves its functions unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from benchmarks.http_peer import BackgroundHttp, QuietHandler
from notify_pipeline import local_issuer
from notify_pipeline.errors import RejectReason, RequestRejected
from notify_pipeline.identity import (
    CertsUnavailable,
    FileCertSource,
    HttpCertSource,
    TokenVerifier,
    VerifiedIdentity,
    parse_certs,
)
from notify_pipeline.local_issuer import LocalIssuer

ISSUER = "https://notify.example.org/local-issuer"
AUDIENCE = "https://notify.example.org"
ACCOUNT = "billing@acme-prod.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("keys"), ISSUER)


@pytest.fixture(scope="module")
def other_issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("other-keys"), ISSUER)


@pytest.fixture
def verifier(issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier(
        certs=FileCertSource(issuer.certs_path), audience=AUDIENCE, issuers=frozenset({ISSUER})
    )


def now() -> datetime:
    return datetime.now(UTC)


def claims(**overrides: object) -> dict[str, object]:
    issued = int(time.time())
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "104211111111111111111",
        "email": ACCOUNT,
        "email_verified": True,
        "iat": issued,
        "exp": issued + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(issuer: LocalIssuer, payload: dict[str, object], *, kid: str | None = None) -> str:
    """A token signed with `issuer`'s private key, under any key id."""
    signer = crypt.RSASigner(issuer._material.private_key, key_id=kid or issuer.kid)
    token: bytes = jwt.encode(signer, payload)
    return token.decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assemble(header: Mapping[str, object], payload: Mapping[str, object], signature: bytes) -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


def rejection(
    verifier: TokenVerifier, token: str | None, received_at: datetime | None = None
) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        verifier.verify(token, received_at=received_at or now())
    exc = caught.value
    assert exc.reason is RejectReason.UNAUTHENTICATED
    if token:
        assert_no_part_of(token, exc)
    return exc


def assert_no_part_of(token: str, exc: BaseException) -> None:
    """Not in the message, the repr, nor the printed traceback with any chained cause."""
    text = "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
    assert token not in text
    for start in range(len(token) - 19):
        assert token[start : start + 20] not in text
    assert exc.__cause__ is None and exc.__context__ is None


# --- round trip and the local issuer ----------------------------------------------------------


def test_minted_token_verifies(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    identity_ = verifier.verify(token, received_at=now())

    assert identity_ == VerifiedIdentity(email=ACCOUNT, subject=identity_.subject, issuer=ISSUER)
    assert identity_.subject.isdigit() and len(identity_.subject) == 21
    assert jwt.decode_header(token) == {"typ": "JWT", "alg": "RS256", "kid": issuer.kid}


def test_subject_is_stable_per_account(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    def subject(account: str) -> str:
        token = issuer.mint(service_account=account, audience=AUDIENCE)
        return verifier.verify(token, received_at=now()).subject

    assert subject(ACCOUNT) == subject(ACCOUNT)
    assert subject(ACCOUNT) != subject("other@acme-prod.iam.gserviceaccount.com")


def test_mint_sets_google_shaped_claims(issuer: LocalIssuer) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=600, now=at)

    payload = jwt.decode(token, verify=False)

    assert payload["iat"] == int(at.timestamp())
    assert payload["exp"] == int(at.timestamp()) + 600
    assert (payload["iss"], payload["aud"], payload["email"]) == (ISSUER, AUDIENCE, ACCOUNT)
    assert payload["email_verified"] is True


def test_mint_refuses_a_non_positive_ttl(issuer: LocalIssuer) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=0)


def test_certs_are_google_v1_format_and_published(issuer: LocalIssuer) -> None:
    certs = issuer.certs()

    assert list(certs) == [issuer.kid]
    assert certs[issuer.kid].startswith("-----BEGIN CERTIFICATE-----")
    assert json.loads(issuer.certs_path.read_text()) == certs
    assert issuer.certs_path.parent == issuer.key_path.parent


def test_key_file_is_private(issuer: LocalIssuer) -> None:
    issuer.kid  # noqa: B018 - creates the key

    assert issuer.key_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in issuer.key_path.parent.iterdir()) == [
        "certs.json",
        "signing-key.pem",
    ]


def test_key_persists_across_instances(tmp_path: Path) -> None:
    first = LocalIssuer(tmp_path, ISSUER)
    token = first.mint(service_account=ACCOUNT, audience=AUDIENCE)
    published = first.certs_path.stat().st_mtime_ns

    second = LocalIssuer(tmp_path, ISSUER)
    verifier = TokenVerifier(
        certs=FileCertSource(second.certs_path), audience=AUDIENCE, issuers=frozenset({ISSUER})
    )

    assert second.kid == first.kid
    assert second.certs() == first.certs()
    assert second.certs_path.stat().st_mtime_ns == published  # unchanged file not rewritten
    assert verifier.verify(token, received_at=now()).email == ACCOUNT


def test_racing_creators_agree_on_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every creator generates a key before any links one, so all but one lose the race.

    Threads call the key loader directly: on Python 3.11 `cached_property` holds one lock for all
    instances, which would serialise `LocalIssuer`s and hide the race.
    """
    creators = 4
    barrier = threading.Barrier(creators)
    generate = rsa.generate_private_key

    def generate_then_wait(**kwargs: int) -> object:
        key = generate(**kwargs)
        barrier.wait(timeout=30)
        return key

    monkeypatch.setattr(rsa, "generate_private_key", generate_then_wait)
    caplog.set_level(logging.DEBUG, logger=local_issuer.__name__)
    key_path = tmp_path / "identity" / "signing-key.pem"
    moduli: list[int] = []

    def create() -> None:
        key = local_issuer._load_or_create_key(key_path)
        moduli.append(key.public_key().public_numbers().n)

    threads = [threading.Thread(target=create) for _ in range(creators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(moduli) == creators and len(set(moduli)) == 1
    assert sum("first; using its key" in r.getMessage() for r in caplog.records) == creators - 1
    assert [p.name for p in key_path.parent.iterdir()] == ["signing-key.pem"]  # no temp files left


def test_racing_processes_agree_on_one_key(tmp_path: Path) -> None:
    start_at = time.time() + 1.5  # after every interpreter has imported, so creation overlaps
    script = (
        "import sys, time\nfrom pathlib import Path\n"
        "from notify_pipeline.local_issuer import LocalIssuer\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "print(LocalIssuer(Path(sys.argv[1]), 'iss').kid)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    kids = {proc.communicate(timeout=60)[0].strip() for proc in procs}

    assert all(proc.returncode == 0 for proc in procs)
    assert kids == {LocalIssuer(tmp_path, ISSUER).kid}


# --- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(verifier: TokenVerifier, token: str | None) -> None:
    assert "no identity_token" in rejection(verifier, token).message


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "x" * 40 + "." * 3],
)
def test_not_a_jwt(verifier: TokenVerifier, token: str) -> None:
    assert "not a JWT" in rejection(verifier, token).message


def test_deeply_nested_header_is_not_a_jwt(verifier: TokenVerifier) -> None:
    token = f"{b64(b'[' * 100_000)}.{b64(b'{}')}.{b64(b'sig')}"

    assert "not a JWT" in rejection(verifier, token).message


def test_alg_none_is_refused(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = assemble({"alg": "none", "typ": "JWT", "kid": issuer.kid}, claims(), b"")

    assert "alg 'none'" in rejection(verifier, token).message


def test_hs256_with_the_public_cert_as_secret_is_refused(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    """The classic algorithm-confusion forgery: HMAC keyed with the published certificate."""
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    unsigned = assemble(header, claims(), b"").rsplit(".", 1)[0]
    secret = issuer.certs()[issuer.kid].encode()
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()

    message = rejection(verifier, f"{unsigned}.{b64(mac)}").message

    assert "alg 'HS256'" in message and "only RS256" in message


def test_unrecognised_alg_is_not_echoed(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = assemble({"alg": "<script>" * 5, "kid": issuer.kid}, claims(), b"sig")

    message = rejection(verifier, token).message

    assert "unrecognised algorithm" in message and "script" not in message


def test_unknown_key_id(other_issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = other_issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    assert "key id is not one of" in rejection(verifier, token).message


def test_missing_key_id(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    header = {"alg": "RS256", "typ": "JWT"}
    unsigned = assemble(header, claims(), b"").rsplit(".", 1)[0]
    signature = crypt.RSASigner(issuer._material.private_key).sign(unsigned.encode())

    assert "no key id" in rejection(verifier, f"{unsigned}.{b64(signature)}").message


def test_signed_with_another_key(
    issuer: LocalIssuer, other_issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = sign(other_issuer, claims(), kid=issuer.kid)

    assert "signature does not match" in rejection(verifier, token).message


def test_tampered_payload(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    header, _, signature = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE).split(".")
    forged_payload = b64(
        json.dumps(claims(email="admin@acme-prod.iam.gserviceaccount.com")).encode()
    )

    message = rejection(verifier, f"{header}.{forged_payload}.{signature}").message

    assert "signature does not match" in message


def test_wrong_audience_names_the_expected_one(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience="https://elsewhere.example.com")

    message = rejection(verifier, token).message

    assert AUDIENCE in message and "elsewhere" not in message


def test_wrong_issuer(other_issuer: LocalIssuer, tmp_path: Path) -> None:
    stranger = LocalIssuer(tmp_path, "https://stranger.example.com")
    verifier = TokenVerifier(
        certs=FileCertSource(stranger.certs_path), audience=AUDIENCE, issuers=frozenset({ISSUER})
    )
    token = stranger.mint(service_account=ACCOUNT, audience=AUDIENCE)

    message = rejection(verifier, token).message

    assert "issuer is not trusted" in message and ISSUER in message and "stranger" not in message


def test_expired_before_receipt_is_rejected(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    minted = now() - timedelta(hours=2)
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=3600, now=minted)
    received = minted + timedelta(minutes=90)

    message = rejection(verifier, token, received_at=received).message

    expired = datetime.fromtimestamp(int(minted.timestamp()) + 3600, UTC)
    assert f"expired at {expired.isoformat()}" in message
    assert f"received at {received.isoformat()}" in message


def test_expired_after_receipt_is_accepted(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    """Valid when the inbox received it, verified an hour after it expired: accepted."""
    minted = now() - timedelta(hours=2)
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=3600, now=minted)

    identity_ = verifier.verify(token, received_at=minted + timedelta(minutes=30))

    assert identity_.email == ACCOUNT


def test_expiry_allows_the_clock_skew(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    minted = now() - timedelta(hours=2)
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=3600, now=minted)
    expiry = datetime.fromtimestamp(int(minted.timestamp()) + 3600, UTC)

    assert verifier.verify(token, received_at=expiry + timedelta(seconds=29)).email == ACCOUNT
    rejection(verifier, token, received_at=expiry + timedelta(seconds=31))


def test_issued_after_receipt_is_rejected(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    message = rejection(verifier, token, received_at=now() - timedelta(minutes=10)).message

    assert "issued at" in message and "after the request was received" in message


def test_issued_within_skew_of_receipt_is_accepted(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    minted = now()
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, now=minted)

    identity_ = verifier.verify(token, received_at=minted - timedelta(seconds=20))

    assert identity_.email == ACCOUNT


def test_not_before_in_the_future_is_rejected(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = sign(issuer, claims(nbf=int(time.time()) + 600))

    assert "not valid before" in rejection(verifier, token).message


def test_not_before_within_the_skew_is_accepted(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = sign(issuer, claims(nbf=int(time.time()) + 10))

    assert verifier.verify(token, received_at=now()).email == ACCOUNT


def test_not_before_is_judged_at_receipt(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    """Issued twenty minutes ago, valid from a minute ago; the request arrived ten minutes ago."""
    issued = int(time.time()) - 1200
    token = sign(issuer, claims(iat=issued, exp=issued + 3600, nbf=int(time.time()) - 60))

    rejection(verifier, token, received_at=now() - timedelta(minutes=10))


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "x"])
def test_critical_header_extensions_are_rejected(
    issuer: LocalIssuer, verifier: TokenVerifier, crit: object
) -> None:
    signer = crypt.RSASigner(issuer._material.private_key, key_id=issuer.kid)
    token = jwt.encode(signer, claims(), header={"crit": crit}).decode()

    assert "crit" in rejection(verifier, token).message


def test_unverified_email(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, email_verified=False)

    assert "not verified" in rejection(verifier, token).message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"email": None}, "no email claim"),
        ({"email": ""}, "no email claim"),
        ({"email_verified": "true"}, "not verified"),
        ({"sub": None}, "no subject"),
        ({"iat": None}, "no valid iat claim"),
        ({"exp": "tomorrow"}, "no valid exp claim"),
        ({"exp": float("nan")}, "no valid exp claim"),
        ({"exp": 10**20}, "no valid exp claim"),
        ({"iat": True}, "no valid iat claim"),
        ({"nbf": "now"}, "no valid nbf claim"),
        ({"nbf": float("nan")}, "no valid nbf claim"),
    ],
)
def test_malformed_claims(
    issuer: LocalIssuer, verifier: TokenVerifier, overrides: dict[str, object], expected: str
) -> None:
    token = sign(issuer, claims(**overrides))

    assert expected in rejection(verifier, token).message


def test_nothing_about_the_token_is_logged(
    issuer: LocalIssuer, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)
    bad = sign(issuer, claims(aud="https://elsewhere.example.com"))

    verifier.verify(good, received_at=now())
    rejection(verifier, bad)

    for token in (good, bad):
        assert all(token[:40] not in record.getMessage() for record in caplog.records)


def test_received_at_must_be_aware(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.verify(token, received_at=datetime.now())


def test_unreadable_certs_are_not_a_rejection(issuer: LocalIssuer, tmp_path: Path) -> None:
    """Missing keys are the deployment's fault: retry later rather than reject the caller."""
    verifier = TokenVerifier(
        certs=FileCertSource(tmp_path / "absent.json"),
        audience=AUDIENCE,
        issuers=frozenset({ISSUER}),
    )
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    with pytest.raises(CertsUnavailable):
        verifier.verify(token, received_at=now())


# --- tokens seen before ------------------------------------------------------------------------


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check the verifier makes, by token."""
    checked: list[str] = []
    real = TokenVerifier._check_signature

    def counting(self: TokenVerifier, token: str, cert: Mapping[str, str]) -> None:
        checked.append(token)
        real(self, token, cert)

    monkeypatch.setattr(TokenVerifier, "_check_signature", counting)
    return checked


def test_a_token_seen_before_is_not_checked_again(
    issuer: LocalIssuer, verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)
    first = verifier.verify(token, received_at=now())
    assert [verifier.verify(token, received_at=now()) for _ in range(3)] == [first] * 3
    assert signature_checks == [token]


def test_a_token_seen_before_still_expires(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE, ttl_seconds=600)
    verifier.verify(token, received_at=now())
    later = now() + timedelta(hours=1)
    assert "expired at" in rejection(verifier, token, received_at=later).message


def test_a_token_seen_before_with_another_signature_is_checked(
    issuer: LocalIssuer, verifier: TokenVerifier, signature_checks: list[str]
) -> None:
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)
    verifier.verify(token, received_at=now())
    signed, _, signature = token.rpartition(".")
    forged = f"{signed}.{b64(bytes(reversed(base64.urlsafe_b64decode(signature + '==='))))}"
    assert "signature does not match" in rejection(verifier, forged).message
    assert signature_checks == [token, forged]


def test_a_token_seen_before_is_refused_once_its_key_is_withdrawn(
    issuer: LocalIssuer, other_issuer: LocalIssuer, tmp_path: Path
) -> None:
    path = tmp_path / "certs.json"
    path.write_text(json.dumps(issuer.certs()))
    verifier = TokenVerifier(certs=FileCertSource(path), audience=AUDIENCE,
                             issuers=frozenset({ISSUER}))
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)
    verifier.verify(token, received_at=now())

    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps(other_issuer.certs()))
    os.replace(replacement, path)

    assert "not one of the issuer's current keys" in rejection(verifier, token).message


# --- cert sources -------------------------------------------------------------------------------


def test_file_source_rereads_a_replaced_file(
    issuer: LocalIssuer, other_issuer: LocalIssuer, tmp_path: Path
) -> None:
    path = tmp_path / "certs.json"
    path.write_text(json.dumps(issuer.certs()))
    source = FileCertSource(path)
    assert list(source.get_certs()) == [issuer.kid]

    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps(other_issuer.certs()))
    os.replace(replacement, path)

    assert list(source.get_certs()) == [other_issuer.kid]


def jwks_for(issuer: LocalIssuer) -> dict[str, object]:
    numbers = issuer._material.private_key.public_key().public_numbers()

    def encode(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    rsa_key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": issuer.kid}
    rsa_key |= {"n": encode(numbers.n), "e": encode(numbers.e)}
    ec_key = {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": "AA", "y": "AA"}
    return {"keys": [ec_key, rsa_key]}


def test_jwks_becomes_public_key_pems(issuer: LocalIssuer) -> None:
    certs = parse_certs(jwks_for(issuer))

    assert list(certs) == [issuer.kid]  # the EC key is skipped
    assert certs[issuer.kid].startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    "document",
    [[], {}, {"keys": []}, {"keys": [{"kty": "RSA", "kid": "k"}]}, {"k": "not a pem"}, {"k": 3}],
)
def test_unusable_key_sets(document: object) -> None:
    with pytest.raises(ValueError):
        parse_certs(document)


class CertServer:
    """A tiny key-set endpoint on 127.0.0.1 that replays queued responses (the last one repeats)."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, bytes, dict[str, str]]] = []
        self.hits = 0
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.hits += 1
                status, body, headers = server.responses[
                    min(server.hits, len(server.responses)) - 1
                ]
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.http = BackgroundHttp(Handler)
        self.url = f"{self.http.base_url}/oauth2/v1/certs"

    def serve(self, document: object, *, status: int = 200, cache_control: str = "") -> None:
        headers = {"Cache-Control": cache_control} if cache_control else {}
        self.responses.append((status, json.dumps(document).encode(), headers))


@pytest.fixture
def cert_server() -> Iterator[CertServer]:
    server = CertServer()
    yield server
    server.http.close()


@pytest.mark.parametrize("fmt", ["v1", "jwks"])
def test_http_source_verifies_in_both_formats(
    issuer: LocalIssuer, cert_server: CertServer, fmt: str
) -> None:
    cert_server.serve(issuer.certs() if fmt == "v1" else jwks_for(issuer))
    verifier = TokenVerifier(
        certs=HttpCertSource(cert_server.url, timeout=5),
        audience=AUDIENCE,
        issuers=frozenset({ISSUER}),
    )
    token = issuer.mint(service_account=ACCOUNT, audience=AUDIENCE)

    assert verifier.verify(token, received_at=now()).email == ACCOUNT


def test_http_source_caches_for_max_age(issuer: LocalIssuer, cert_server: CertServer) -> None:
    cert_server.serve(issuer.certs(), cache_control="public, max-age=19845, must-revalidate")
    source = HttpCertSource(cert_server.url)

    source.get_certs()
    source.get_certs()

    assert cert_server.hits == 1


@pytest.mark.parametrize("cache_control", ["", "no-cache", "max-age=0"])
def test_http_source_refetches_without_max_age(
    issuer: LocalIssuer, cert_server: CertServer, cache_control: str
) -> None:
    cert_server.serve(issuer.certs(), cache_control=cache_control)
    source = HttpCertSource(cert_server.url)

    source.get_certs()
    source.get_certs()

    assert cert_server.hits == 2


def test_http_source_retries_a_server_error(issuer: LocalIssuer, cert_server: CertServer) -> None:
    cert_server.serve({"error": "unavailable"}, status=503)
    cert_server.serve(issuer.certs())

    assert list(HttpCertSource(cert_server.url).get_certs()) == [issuer.kid]
    assert cert_server.hits == 2


def test_http_source_gives_up_after_bounded_retries(cert_server: CertServer) -> None:
    cert_server.serve({"error": "down"}, status=500)

    with pytest.raises(CertsUnavailable, match=r"127\.0\.0\.1"):
        HttpCertSource(cert_server.url, retries=1).get_certs()
    assert cert_server.hits == 2


def test_http_source_rejects_a_garbage_body(cert_server: CertServer) -> None:
    cert_server.serve(["not", "a", "key", "set"])

    with pytest.raises(CertsUnavailable):
        HttpCertSource(cert_server.url).get_certs()


def test_http_source_times_out(cert_server: CertServer) -> None:
    listener = ThreadingHTTPServer(
        ("127.0.0.1", 0), BaseHTTPRequestHandler
    )  # accepts, never answers
    url = f"http://127.0.0.1:{listener.server_address[1]}/certs"
    try:
        started = time.monotonic()
        with pytest.raises(CertsUnavailable):
            HttpCertSource(url, timeout=0.2, retries=0).get_certs()
        assert time.monotonic() - started < 5
    finally:
        listener.server_close()
