"""Shared plumbing: a throwaway local deployment, its SMTP peer in its own process, requests.

Two peers: `notify sink` (the project's Python sink: Maildir, an fsync per message) and
Postfix's C `smtp-sink` dumping each message to a tmpfs (the cheapest real SMTP server there is,
so what the benchmarks measure is the sender). Either runs in a process of its own, so its CPU
never shares a GIL with whatever is being measured, and reports its own CPU and, from what it
stored, how many messages each recipient received.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SINK_MISSING = (
    f"Postfix's smtp-sink is not installed ({SMTP_SINK}). Install it with"
    " `apt-get install postfix` (Debian/Ubuntu; the Postfix daemon itself need not run), or"
    " pass --peer python to measure against the project's own sink instead."
)
PEERS = ("c", "python")

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


@dataclass
class Peer:
    """An SMTP server process the benchmark sends to, and where it stores what it accepts."""

    kind: str  # "c" (smtp-sink) or "python" (notify sink)
    proc: subprocess.Popen[bytes]
    store: Path  # the Maildir, or smtp-sink's dump folder

    def cpu_seconds(self) -> float:
        """User + system CPU the peer has used so far."""
        import psutil

        return float(sum(psutil.Process(self.proc.pid).cpu_times()[:2]))

    def delivery_counts(self) -> Counter[str]:
        """How many stored messages each recipient received."""
        if self.kind == "python":
            return delivery_counts(self.store)
        return Counter(r for path in self.store.rglob("*") if path.is_file()
                       for r in dump_recipients(path))

    def exactly_once(self, prefix: str, messages: int) -> dict[str, Any]:
        counts = self.delivery_counts()
        return {"peer": self.kind, "stored": sum(counts.values()),
                **once(counts, prefix, messages)}


def smtp_sink_available() -> bool:
    return os.access(SMTP_SINK, os.X_OK)


@contextmanager
def peer_process(deployment: Deployment, log: IO[bytes], kind: str) -> Iterator[Peer]:
    """The deployment's SMTP peer (`kind`: "c" or "python") on its port, stopped on the way out.

    smtp-sink writes one file per message into a fresh folder on /dev/shm (a tmpfs, so no disk
    wait), named by the second it arrived plus a random number; it is removed afterwards.
    """
    if kind == "python":
        with sink_process(deployment, log) as proc:
            yield Peer(kind, proc, deployment.mail_dir)
        return
    if not smtp_sink_available():
        raise RuntimeError(SMTP_SINK_MISSING)
    shm = Path("/dev/shm")
    dump = Path(tempfile.mkdtemp(prefix="notify-bench-", dir=shm if shm.is_dir() else None))
    privileges: list[str] = []
    if os.geteuid() == 0:  # smtp-sink refuses to run as root without dropping privileges
        dump.chmod(0o777)
        privileges = ["-u", "nobody"]
    proc = subprocess.Popen(
        [SMTP_SINK, *privileges, "-d", f"{dump}/%H%M%S/", f"{HOST}:{deployment.smtp_port}",
         "256"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(deployment.smtp_port, proc, timeout=30)
        yield Peer(kind, proc, dump)
    finally:
        stop(proc)
        shutil.rmtree(dump, ignore_errors=True)


def dump_recipients(path: Path) -> list[str]:
    """The X-Rcpt-Args lines smtp-sink puts before each dumped message."""
    recipients = []
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(b"Received:"):
                break
            if line.startswith(b"X-Rcpt-Args:"):
                recipients.append(line.split(b":", 1)[1].strip().strip(b"<>").decode())
    return recipients


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
    return {"maildir_files": len(maildir_files(mail_dir)),
            **once(delivery_counts(mail_dir), prefix, messages)}


def once(counts: Counter[str], prefix: str, messages: int) -> dict[str, bool]:
    """Whether every request's recipient received exactly one message, and nobody else any."""
    expected = {recipient(prefix, i) for i in range(messages)}
    return {"exactly_once": set(counts) == expected and all(c == 1 for c in counts.values())}


def write_section(doc: Path, section: str, *, start: str, end: str, title: str) -> None:
    """Replace what lies between the `start` and `end` markers of `doc` with `section` (which
    carries the markers); the prose around it is kept by hand. A missing `doc` is created with
    `title` and the section alone."""
    text = doc.read_text() if doc.exists() else f"# {title}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(head + section + tail)


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


def ms_per_message(cpu_seconds: float, messages: int) -> float:
    return round(1000 * cpu_seconds / messages, 3) if messages else 0.0


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat, all but idle and
    iowait), so that what a benchmark's own processes used can be subtracted from it."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and all its live descendants, each with the CPU of
    the children it has already reaped (so exited render workers count too)."""
    return _cpu_of(_tree(pid))


def descendants_cpu_seconds(pid: int) -> float:
    """As `tree_cpu_seconds`, without the process itself: a process adds its own CPU from
    `getrusage`, whose microseconds never fall behind /proc's clock ticks."""
    return _cpu_of(_tree(pid)[1:])


def _tree(pid: int) -> list[Any]:
    """The live process `pid` and its live descendants (none if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_of(procs: list[Any]) -> float:
    import psutil

    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


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


class MachineShare:
    """What the machine did while a benchmark ran: load averages, and the CPU its other work
    used (all busy CPU, from /proc/stat, minus this process's and its descendants').

    Started in the benchmark's own process, it makes that process the subreaper of its
    descendants (Linux), so a grandchild orphaned by an exiting child (a driver's forkserver
    and render workers) is reaped here and its CPU counted as the benchmark's own, not other
    work's. `finish` reaps them, so call it after every child has been stopped.
    """

    def __init__(self) -> None:
        _become_subreaper()
        self.load_before = [round(x, 2) for x in os.getloadavg()]
        self._busy = machine_cpu_seconds()
        self._own = _own_cpu_seconds()
        self._start = time.monotonic()

    def finish(self) -> dict[str, Any]:
        _reap_orphans()
        wall = time.monotonic() - self._start
        busy = machine_cpu_seconds() - self._busy
        own = _own_cpu_seconds() - self._own
        return {
            "seconds": round(wall, 1),
            "load_average_before": self.load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_seconds_busy": round(busy, 1),
            "cpu_seconds_benchmark": round(own, 1),
            "cpu_seconds_other_work": round(max(0.0, busy - own), 1),
            "other_work_cores": round(max(0.0, busy - own) / wall, 2) if wall else 0.0,
        }


def _own_cpu_seconds() -> float:
    import resource

    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _become_subreaper() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass  # not Linux: orphans' CPU then counts as other work


def _reap_orphans(timeout: float = 10.0) -> None:
    """Wait (a bounded time) for descendants orphaned to us, so their CPU is ours."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)
