"""`notify up`: the local SMTP sink in this process and `dagster dev` beside it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from notify_pipeline.settings import Settings


def run_up(settings: Settings, *, ui_port: int) -> int:
    """Run the sink in this process and `dagster dev` beside it until interrupted.

    `dagster dev` runs in its own process group, and SIGTERM or SIGINT interrupts that whole group:
    the long-lived delivery worker run, the code server and the daemon all stop at once, instead
    of the code server waiting (up to an hour) for the worker run to end.
    """
    from notify_pipeline.sink import MaildirSink

    dagster_home = (settings.home / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    target = ["-w", "workspace.yaml"] if Path("workspace.yaml").exists() else [
        "-m", "notify_pipeline.definitions"
    ]
    dagster = shutil.which("dagster") or "dagster"
    with MaildirSink(settings.mail_dir, host=settings.smtp_host, port=settings.smtp_port):
        print(f"SMTP sink on {settings.smtp_host}:{settings.smtp_port} → {settings.mail_dir}")
        proc = subprocess.Popen(
            [dagster, "dev", *target, "-h", "127.0.0.1", "-p", str(ui_port)],
            env=env, process_group=0,
        )
        interrupt = lambda signum, frame: _signal_group(proc.pid, signal.SIGINT)  # noqa: E731
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:
                    _signal_group(proc.pid, signal.SIGINT)
        finally:
            signal.signal(signal.SIGTERM, previous)
            _reap_group(proc)


UP_STOP_SECONDS = 60.0


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """Return only when every process of `dagster dev`'s group is gone: interrupt it if it is
    still running (we are leaving on an exception), then kill whatever outlives the grace time."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + UP_STOP_SECONDS
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_members(proc.pid):
        print("notify: dagster dev did not stop in time; killing its processes", file=sys.stderr)
        _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group, from /proc."""
    if not Path("/proc").is_dir():  # not Linux: ask the kernel; a zombie still counts here
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


DAGSTER_YAML = """\
telemetry:
  enabled: false
nux:  # no first-visit newsletter sign-up dialog in the UI
  enabled: false
run_monitoring:  # a run stuck starting (its process never came up) is failed, and replaced
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
python_logs:
  managed_python_loggers: [notify_pipeline]
  python_log_level: INFO
"""
