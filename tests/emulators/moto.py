"""moto's server for SES v2 / SNS / SQS, and a signing-certificate server for SNS envelopes.

Fixtures (import them into a test module, or list this module in `pytest_plugins`):
- `moto_server` (session): `moto_server -H 127.0.0.1 -p PORT` on a free port, one per xdist
  worker, stopped at the end of the session.
- `aws_env` (function): a reset moto plus `AWS_ENDPOINT_URL`, dummy credentials and a region in
  the environment, so code that builds its own boto3 clients reaches moto.
- `sns_certs` (session): `SnsCertServer`, an HTTP server on 127.0.0.1 serving the test signing
  certificate, and moto's own SNS certificates, by the path of their `SigningCertURL`.

moto signs the envelopes it delivers to SQS for real (SHA256withRSA, a fresh certificate per
topic subscription) but cannot serve the certificate to a plain GET in server mode: it routes the
request by host and answers as S3. It serves it when the request carries a SigV4 Authorization
header naming `sns` and the region, which `SnsCertServer` adds when it relays to moto. moto also
leaves `Subject` out of the string it signs, so publish without a subject.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from benchmarks.http_peer import BackgroundHttp, QuietHandler
from notify_pipeline.provider_events.sns import string_to_sign
from tests.conftest import free_port
from tests.emulators.process import answers, spawn, stop, wait_ready

REGION = "eu-west-2"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
TEST_CERT_NAME = "SimpleNotificationService-notify-test.pem"


def _http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    region: str = REGION

    def client(self, service: str, **kwargs: Any) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            **CREDENTIALS, **kwargs)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
        }

    def reset(self) -> None:
        status, _ = _http(f"{self.endpoint}/moto-api/reset", method="POST")
        assert status == 200, status

    def data(self) -> dict[str, Any]:
        status, body = _http(f"{self.endpoint}/moto-api/data.json")
        assert status == 200, status
        return dict(json.loads(body))

    def sent_raw_messages(self) -> list[dict[str, Any]]:
        """What SES "sent": `{"id", "source", "destinations", "raw_data"}` per message."""
        return list(self.data()["ses"]["RawMessage"])

    def queue_for_topic(self, name: str) -> tuple[str, str]:
        """A topic and an SQS queue subscribed to it (raw delivery off): (topic ARN, queue URL)."""
        sns, sqs = self.client("sns"), self.client("sqs")
        topic = sns.create_topic(Name=name)["TopicArn"]
        queue = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
        return topic, queue


def _start(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).with_name("moto_server")
    command = str(binary) if binary.exists() else shutil.which("moto_server")
    assert command, "moto_server not found: pip install 'moto[server]>=5.1,<6'"
    return spawn([command, "-H", "127.0.0.1", "-p", str(port)], log)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    process = _start(port, log)
    server = MotoServer(f"http://127.0.0.1:{port}")
    try:
        wait_ready(process, answers(f"{server.endpoint}/moto-api/data.json"), what="moto_server",
                   log=log, seconds=30)
        yield server
    finally:
        stop(process)


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    return moto_server


@dataclass
class TestSigner:
    """Signs SNS envelopes the way SNS does, with a key and certificate made for this session."""

    __test__ = False  # not a test class, whatever its name

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def certificate_pem(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def envelope(
        self,
        message: str,
        *,
        topic_arn: str,
        version: str = "2",
        kind: str = "Notification",
        cert_url: str = f"https://sns.{REGION}.amazonaws.com/{TEST_CERT_NAME}",
        message_id: str | None = None,
        subject: str | None = None,
    ) -> dict[str, str]:
        """A signed envelope as SNS would deliver it to SQS or an HTTPS endpoint."""
        fields = {
            "Type": kind,
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": message,
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "SignatureVersion": version,
            "SigningCertURL": cert_url,
        }
        if subject is not None:
            fields["Subject"] = subject
        if kind != "Notification":
            fields["Token"] = uuid.uuid4().hex
            fields["SubscribeURL"] = (f"https://sns.{REGION}.amazonaws.com/"
                                      f"?Action=ConfirmSubscription&Token={fields['Token']}")
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(fields), padding.PKCS1v15(), algorithm)
        fields["Signature"] = base64.b64encode(signature).decode()
        return fields


class SnsCertServer:
    """Serves `/<name>.pem`: the test certificate, else moto's certificate of that name."""

    def __init__(self, moto: MotoServer, signer: TestSigner) -> None:
        self.requests: list[str] = []
        pems = {f"/{TEST_CERT_NAME}": signer.certificate_pem()}
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                status, body = (200, pems[self.path]) if self.path in pems else _from_moto(
                    moto, self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = BackgroundHttp(Handler)
        self.base_url = f"{self._http.base_url}/"

    def close(self) -> None:
        self._http.close()


def _from_moto(moto: MotoServer, path: str) -> tuple[int, bytes]:
    """moto serves SNS certificates only to requests that look signed for `sns` in its region.

    An unknown name makes moto fail with a 500; the SNS host answers 404, and so does this.
    """
    auth = (f"AWS4-HMAC-SHA256 Credential=testing/20260101/{moto.region}/sns/aws4_request, "
            "SignedHeaders=host, Signature=0")
    status, body = _http(f"{moto.endpoint}{path}", headers={"Authorization": auth})
    return (200, body) if status == 200 else (404, b"not found")


@pytest.fixture(scope="session")
def sns_signer() -> TestSigner:
    return TestSigner()


@pytest.fixture(scope="session")
def sns_certs(moto_server: MotoServer, sns_signer: TestSigner) -> Iterator[SnsCertServer]:
    server = SnsCertServer(moto_server, sns_signer)
    yield server
    server.close()
