"""The `local` profile's token issuer: Google's role, played with a key kept on disk.

It mints ID tokens shaped like Google's for a service account, and publishes its certificate as
`certs.json` beside the key, in Google's v1 format, for `identity.FileCertSource` to verify with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from notify_pipeline import files

_log = logging.getLogger(__name__)

# The local certificate is a pure function of the key (fixed dates, serial from the key), so any
# process can rebuild it and every process publishes the same certs.json.
_CERT_NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
_CERT_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # RFC 5280: no expiry


class LocalIssuer:
    """The `local` profile's stand-in for Google: mints ID tokens with a key kept under `keys_dir`.

    The key is created on first use. Concurrent creators each write a complete private temp file
    and hard-link it into place; linking never overwrites, so the first link wins and every
    process then loads that one key.
    """

    def __init__(self, keys_dir: Path, issuer: str) -> None:
        self._dir = keys_dir / "identity"
        self._issuer = issuer

    @property
    def key_path(self) -> Path:
        return self._dir / "signing-key.pem"

    @property
    def certs_path(self) -> Path:
        """certs.json beside the key, for verifiers in other processes (see `FileCertSource`)."""
        return self._material.certs_path

    @property
    def kid(self) -> str:
        """A fingerprint of the public key, so a new key never reuses an old key id."""
        return self._material.kid

    def certs(self) -> dict[str, str]:
        """The issuer's key in Google's v1 format: `{kid: PEM X.509 certificate}`."""
        return {self._material.kid: self._material.cert_pem}

    def mint(
        self,
        *,
        service_account: str,
        audience: str,
        ttl_seconds: int = 3600,
        now: datetime | None = None,
        email_verified: bool = True,
    ) -> str:
        """A signed ID token shaped like Google's for a service account."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        issued_at = int((now or datetime.now(UTC)).timestamp())
        claims = {
            "iss": self._issuer,
            "aud": audience,
            "sub": _subject_for(service_account),
            "email": service_account,
            "email_verified": email_verified,
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
        }
        token: bytes = jwt.encode(self._signer, claims)
        return token.decode("ascii")

    @cached_property
    def _material(self) -> _IssuerKey:
        """Load or create the key, and publish its certificate before any token is signed."""
        private_key = _load_or_create_key(self.key_path)
        kid = _fingerprint(private_key.public_key())
        cert = _self_signed_cert(private_key, kid).public_bytes(serialization.Encoding.PEM)
        certs_path = self._dir / "certs.json"
        content = json.dumps({kid: cert.decode("ascii")}, indent=2).encode()
        files.replace_if_changed(certs_path, content, mode=files.SHARED)
        return _IssuerKey(private_key, kid, cert.decode("ascii"), certs_path)

    @cached_property
    def _signer(self) -> crypt.RSASigner:
        key, kid = self._material.private_key, self._material.kid
        return crypt.RSASigner(key, key_id=kid)


class _IssuerKey(NamedTuple):
    private_key: rsa.RSAPrivateKey
    kid: str
    cert_pem: str
    certs_path: Path


def _subject_for(email: str) -> str:
    """A stable 21-digit `sub`, shaped like Google's numeric account ids."""
    digest = hashlib.sha256(email.lower().encode()).digest()
    return str(10**20 + int.from_bytes(digest[:8], "big"))


def _fingerprint(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:40]


def _self_signed_cert(key: rsa.RSAPrivateKey, kid: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int(kid[:30], 16) | 1)
        .not_valid_before(_CERT_NOT_BEFORE)
        .not_valid_after(_CERT_NOT_AFTER)
        .sign(key, hashes.SHA256())
    )


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        _create_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


def _create_key(path: Path) -> None:
    """Write a new key unless another process got there first (link fails: theirs is kept)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if not files.create_once(path, pem, mode=files.PRIVATE):
        _log.debug("another process created %s first; using its key", path)
