"""Per-service SMTP credentials: generated once, shown once, stored only as scrypt hashes.

The store is one JSON file (0600), replaced atomically on every change, so the server can read
it at each AUTH without a lock and a revocation takes effect at the next login. Changes take
an exclusive lock beside the file, so two commands never lose each other's change.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notify_pipeline.registry import Registry, Service
from notify_pipeline.submission.errors import CredentialError, SubmissionReason

STORE_NAME = "smtp-credentials.json"
PASSWORD_BYTES = 24  # secrets.token_urlsafe: 192 random bits, 32 characters
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # about 16 MiB and some tens of ms per check
_KEY_BYTES = 32
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CredentialInfo:
    """What `notify smtp-credentials list` shows: never the hash."""

    username: str
    service: str
    created: datetime

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "service": self.service,
                "created": self.created.isoformat()}


@dataclass(frozen=True)
class NewCredential:
    """A freshly created credential; the only time the password exists outside a client."""

    username: str
    service: str
    password: str

    def __repr__(self) -> str:
        return f"NewCredential(username={self.username!r}, service={self.service!r})"


def smtp_service(registry: Registry, service_id: str) -> Service:
    """The registered service, if it has opted in to SMTP submission; else `CredentialError`."""
    service = registry.get(service_id)
    if service is None:
        raise CredentialError(SubmissionReason.UNKNOWN_SERVICE,
                              f"no service {service_id!r} is registered")
    if not service.advanced.smtp:
        raise CredentialError(
            SubmissionReason.SMTP_NOT_ENABLED,
            f"service {service_id!r} has not enabled SMTP submission (advanced.smtp: true)",
        )
    return service


def credential_store(home: Path) -> CredentialStore:
    """The deployment's store: `$NOTIFY_HOME/smtp-credentials.json`."""
    return CredentialStore(home / STORE_NAME)


class CredentialStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, registry: Registry, service_id: str) -> NewCredential:
        """A new credential for a service with `advanced.smtp`; the password is returned once."""
        service = smtp_service(registry, service_id)
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        with self._changing() as entries:
            taken = {e["username"] for e in entries}
            username = _new_username(service.id, taken)
            entries.append({"username": username, "service": service.id,
                            "created": datetime.now(UTC).isoformat(), **_hash(password)})
        return NewCredential(username, service.id, password)

    def credentials(self, service_id: str | None = None) -> list[CredentialInfo]:
        """Every credential (of one service, when given), without its hash."""
        return [
            CredentialInfo(e["username"], e["service"], datetime.fromisoformat(e["created"]))
            for e in self._read()
            if service_id is None or e["service"] == service_id
        ]

    def revoke(self, service_id: str, username: str | None = None) -> list[str]:
        """Remove one of the service's credentials (or all of them); the usernames removed."""
        with self._changing() as entries:
            gone = [e for e in entries if e["service"] == service_id
                    and (username is None or e["username"] == username)]
            if not gone:
                which = f"credential {username!r}" if username else "credentials"
                raise CredentialError(SubmissionReason.UNKNOWN_CREDENTIAL,
                                      f"service {service_id!r} has no {which}")
            entries[:] = [e for e in entries if e not in gone]
        return [e["username"] for e in gone]

    def verify(self, username: str, password: str) -> str | None:
        """The service the pair belongs to, or None. Slow on purpose: call it off the event loop.

        An unknown username costs the same scrypt run as a wrong password, so timing does not
        tell which usernames exist; the hashes are compared in constant time.
        """
        entry = next((e for e in self._read() if e["username"] == username), None)
        stored = entry or _DUMMY
        derived = _derive(password, base64.b64decode(stored["salt"]), stored)
        matches = hmac.compare_digest(derived, base64.b64decode(stored["hash"]))
        return str(entry["service"]) if entry is not None and matches else None

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = data["credentials"]
        return entries

    @contextmanager
    def _changing(self) -> Iterator[list[dict[str, Any]]]:
        """Read, let the caller change the entries, write back atomically, all under a lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            self._write(entries)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        content = json.dumps({"version": _FORMAT_VERSION, "credentials": entries}, indent=2)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            Path(name).replace(self.path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise


def _new_username(service_id: str, taken: set[str]) -> str:
    while True:
        username = f"{service_id}.{secrets.token_hex(4)}"
        if username not in taken:
            return username


def _hash(password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(16)
    derived = _derive(password, salt, _SCRYPT)
    return {"kdf": "scrypt", **_SCRYPT, "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(derived).decode()}


def _derive(password: str, salt: bytes, params: dict[str, Any]) -> bytes:
    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r, dklen=_KEY_BYTES)


# Checked against when the username is unknown: same cost, never matches a real password.
_DUMMY: dict[str, Any] = {**_SCRYPT, "salt": base64.b64encode(b"\0" * 16).decode(),
                          "hash": base64.b64encode(b"\0" * _KEY_BYTES).decode()}
