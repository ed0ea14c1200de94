"""Shared plumbing: a throwaway local deployment, its SMTP sink in its own process, requests.

The sink runs as `notify sink` in a process of its own, as in production, so its CPU, its
event loop and its fsyncs never share a GIL with whatever is being measured.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"
SERVICE = "lookup-notices"
ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"
HOST = "127.0.0.1"

# A typical notification: one recipient, a short plain-text body.
BODY = (
    "Hello,\n\nYour weekly summary is ready. Three items need your attention before Friday;"
    " open the service to review them.\n\nThis message was sent automatically; replies are"
    " not read.\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    """A local-profile deployment in its own folder, with default settings otherwise."""

    home: Path
    smtp_port: int

    @classmethod
    def create(cls, root: Path, name: str) -> Deployment:
        home = root / name
        home.mkdir(parents=True, exist_ok=False)
        return cls(home.resolve(), free_port())

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment without any NOTIFY_* or DAGSTER_HOME, plus this deployment."""
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("NOTIFY_") and k != "DAGSTER_HOME"
        }
        env.update(
            NOTIFY_PROFILE="local",
            NOTIFY_HOME=str(self.home),
            NOTIFY_REGISTRY=str(REGISTRY),
            NOTIFY_SMTP_HOST=HOST,
            NOTIFY_SMTP_PORT=str(self.smtp_port),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=str(REPO),
        )
        return env

    @property
    def mail_dir(self) -> Path:
        return self.home / "mail"

    def settings(self) -> Any:
        from notify_pipeline.settings import Settings

        return Settings(home=self.home, registry=REGISTRY, smtp_host=HOST,
                        smtp_port=self.smtp_port)

    def token(self) -> str:
        """One ID token minted by the deployment's local issuer, valid for an hour."""
        from notify_pipeline.local_issuer import LocalIssuer

        s = self.settings()
        token: str = LocalIssuer(s.keys_dir, s.local_issuer).mint(
            service_account=ACCOUNT, audience=s.deployment_audience
        )
        return token


def request_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}"


def recipient(prefix: str, index: int) -> str:
    """Each request has its own recipient, so the Maildir tells which request a file is."""
    return f"{request_id(prefix, index)}@example.org"


def request_body(token: str, prefix: str, index: int) -> bytes:
    return json.dumps({
        "version": 1,
        "id": request_id(prefix, index),
        "service": SERVICE,
        "identity_token": token,
        "to": [recipient(prefix, index)],
        "subject": f"Your weekly summary ({index})",
        "text": BODY,
    }).encode()


def request_name(prefix: str, index: int) -> str:
    return f"{SERVICE}--{request_id(prefix, index)}.json"


@contextmanager
def sink_process(deployment: Deployment, log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`notify sink` in its own process; stopped (SIGTERM, then SIGKILL) on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_pipeline.cli", "sink", "--port",
         str(deployment.smtp_port)],
        env=deployment.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(deployment.smtp_port, proc, timeout=60)
        yield proc
    finally:
        stop(proc)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s")


def stop(proc: subprocess.Popen[Any], *, timeout: float = 30.0, group: bool = False) -> None:
    """Ask a process (or its whole process group) to stop; kill it if it does not."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    try:
        send(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        proc.wait(timeout=timeout)


def maildir_files(mail_dir: Path) -> list[Path]:
    new = mail_dir / "new"
    return sorted(new.iterdir()) if new.exists() else []


def envelope_recipients(path: Path) -> list[str]:
    """The X-Original-To line the sink prepends to every stored message."""
    with path.open("rb") as fh:
        head = fh.read(4096).decode("ascii", "replace")
    lines = head.replace("\r\n ", " ").split("\r\n")
    for line in lines:
        if line.startswith("X-Original-To:"):
            return [a.strip() for a in line.partition(":")[2].split(",") if a.strip()]
    return []


def delivery_counts(mail_dir: Path) -> Counter[str]:
    """How many stored messages each recipient received."""
    return Counter(r for path in maildir_files(mail_dir) for r in envelope_recipients(path))


def exactly_once(mail_dir: Path, prefix: str, messages: int) -> dict[str, Any]:
    counts = delivery_counts(mail_dir)
    expected = {recipient(prefix, i) for i in range(messages)}
    return {
        "maildir_files": len(maildir_files(mail_dir)),
        "exactly_once": set(counts) == expected and all(c == 1 for c in counts.values()),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def rate(messages: int, seconds: float) -> float:
    return round(messages / seconds, 1) if seconds > 0 else 0.0


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of the session `notify up` leads: it and all it started
    (`dagster dev` runs in a process group of its own, in the same session)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members
