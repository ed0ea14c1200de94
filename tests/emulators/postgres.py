"""A throwaway Postgres cluster per test session (so per xdist worker) on 127.0.0.1.

Postgres refuses to run as root, so under root the cluster belongs to the `postgres` user and its
commands run through `runuser`. Durability is switched off: the cluster lives for one session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import free_port

PASSWORD = secrets.token_urlsafe(16)


def _bindir() -> Path:
    """`NOTIFY_PG_BINDIR`, else the newest Debian `postgresql-NN` install."""
    if configured := os.environ.get("NOTIFY_PG_BINDIR"):
        return Path(configured)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no Postgres: apt-get install postgresql, or set NOTIFY_PG_BINDIR")
    return found[-1].parent


class PostgresCluster:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data, self.log = root / "data", root / "postgres.log"
        self._bin = _bindir()
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def dsn(self) -> str:
        return (f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"
                f" password={PASSWORD}")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_postgres, str(self._bin / tool), *args], check=True,
                       capture_output=True, timeout=60)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                      "-o", options, "start")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"Postgres did not start:\n{self.log.read_text()}") from exc

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN (with password) for a superuser on a fresh cluster, stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="notify-pg-"))
    cluster = PostgresCluster(root, free_port())
    try:
        cluster.start()
        yield cluster.dsn
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
