"""Fixtures for SMTP submission: a registry with SMTP services, TLS files, a running server."""

from __future__ import annotations

import shutil
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.policy import Domains
from notify_pipeline.submission.credentials import CredentialStore, credential_store
from notify_pipeline.submission.live_registry import LiveRegistry
from notify_pipeline.submission.server import SubmissionHandler, SubmissionServer
from notify_pipeline.submission.submitter import local_submitters
from notify_pipeline.submission.throttle import FailureThrottle
from notify_pipeline.submission.tls import self_signed_pem, server_context
from tests.conftest import LocalDeployment
from tests.helpers import REGISTRY

SMTP_SERVICES = {
    # Opted in to SMTP and Reply-To, on the main domain and a custom one.
    "smtp-notices": """\
id: smtp-notices
display_name: SMTP Notices
local_part: smtp-notices
technical_contacts: [smtp-team@example.org]
service_accounts: [smtp-notices@smtp-1234.iam.gserviceaccount.com]
environment: production
advanced:
  smtp: true
  reply_to: true
  custom_domains: [mail.smtp-notices.example.com]
""",
    # Opted in to SMTP only, on the testing domain, with an allow list.
    "smtp-limited": """\
id: smtp-limited
display_name: SMTP Limited
local_part: smtp-limited
technical_contacts: [smtp-team@example.org]
service_accounts: [smtp-limited@smtp-1234.iam.gserviceaccount.com]
environment: non-production
use_testing_domain: true
allowed_recipients: [tester@example.org, qa@example.org]
advanced:
  smtp: true
""",
}


@pytest.fixture
def smtp_registry(local: LocalDeployment, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped registry plus the SMTP services, as this test's NOTIFY_REGISTRY."""
    directory = tmp_path / "registry"
    directory.mkdir()
    for path in REGISTRY.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    for service_id, text in SMTP_SERVICES.items():
        (directory / f"{service_id}.yaml").write_text(text)
    monkeypatch.setenv("NOTIFY_REGISTRY", str(directory))
    local.env["NOTIFY_REGISTRY"] = str(directory)
    return directory


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert_pem, key_pem = self_signed_pem("localhost")
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    return directory / "cert.pem", directory / "key.pem"


class RecordingSleep:
    """The throttle's sleep: records each delay instead of waiting, so tests stay fast."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Submission:
    """A running submission server and what a test needs around it."""

    server: SubmissionServer
    store: CredentialStore
    registry: LiveRegistry
    sleep: RecordingSleep
    cert: Path
    inbox: Path
    clients: list[smtplib.SMTP] = field(default_factory=list)

    def credential(self, service: str = "smtp-notices") -> tuple[str, str]:
        new = self.store.create(self.registry(), service)
        return new.username, new.password

    def connect(self, *, starttls: bool = True) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.server.port, timeout=30)
        self.clients.append(client)
        client.ehlo("client.example.org")
        if starttls:
            client.starttls(context=ssl.create_default_context(cafile=self.cert))
            client.ehlo("client.example.org")
        return client

    def login(self, service: str = "smtp-notices") -> smtplib.SMTP:
        client = self.connect()
        client.login(*self.credential(service))
        return client

    def requests(self) -> list[Path]:
        return sorted(self.inbox.glob("*.json"))


@pytest.fixture
def submission(local: LocalDeployment, smtp_registry: Path,
               tls_files: tuple[Path, Path]) -> Iterator[Submission]:
    s = local.settings
    registry = LiveRegistry(smtp_registry)
    sleep = RecordingSleep()
    handler = SubmissionHandler(
        credentials=credential_store(s.home), registry=registry,
        domains=Domains(s.domain, s.testing_domain),
        submitter_for=local_submitters(inbox=LocalInbox(s.home),
                                       issuer=LocalIssuer(s.keys_dir, s.local_issuer),
                                       audience=s.deployment_audience, registry=registry),
        throttle=FailureThrottle(sleep=sleep),
    )
    server = SubmissionServer(handler, tls=server_context(*tls_files), port=0)
    with server:
        running = Submission(server, handler.credentials, registry, sleep, tls_files[0],
                             s.inbox_dir)
        yield running
        for client in running.clients:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
