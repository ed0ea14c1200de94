"""The server's TLS context, and a self-signed certificate for trying SMTP submission locally."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify_pipeline.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or newer) from PEM files; `ConfigError` when unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--tls-cert/--tls-key", f"cannot load {cert} and {key}: {exc}") from None
    return context


def self_signed(directory: Path, hostname: str, *, days: int = 365) -> tuple[Path, Path]:
    """(cert, key) under `directory`, created on first use, for `hostname` and 127.0.0.1.

    Mail clients must be told to trust it (or not to verify): it is for local use only.
    """
    cert_path, key_path = directory / "smtp-tls-cert.pem", directory / "smtp-tls-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_pem, key_pem = self_signed_pem(hostname, days=days)
    directory.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def self_signed_pem(hostname: str, *, days: int = 365) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a certificate for it naming `hostname` and 127.0.0.1, in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(hostname), x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
