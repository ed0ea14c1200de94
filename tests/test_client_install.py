"""The client installed on its own: a fresh virtualenv with the base install and no extras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import PROD_ACCOUNT, REPO

pytestmark = pytest.mark.slow

SERVER_ONLY = ("dagster", "duckdb", "boto3", "pydantic_settings", "dkim", "aiosmtpd", "pandas",
               "django")

CLIENT_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    missing = [m for m in {server_only!r} if importlib.util.find_spec(m) is None]
    try:
        import dagster
    except ImportError:
        dagster_fails = True
    else:
        dagster_fails = False
    import notify_pipeline
    from notify_pipeline.client import MockSession, Session
    inbox = sys.argv[1]
    ids = [
        Session("lookup-notices", inbox, service_account={account!r}).send(
            to="alice@example.org", subject="From a client-only install", text="Hello",
            attachments=[("a.txt", b"attached", "text/plain")]),
        Session("lookup-notices", inbox).send(  # the account comes from the registry
            to="bob@example.org", subject="Second", html="<p>Hi</p>", idempotency_key="second"),
    ]
    MockSession("lookup-notices").send(to="carol@example.org", subject="s", text="t")
    print(json.dumps({{"missing": missing, "dagster_fails": dagster_fails, "ids": ids,
                      "package": notify_pipeline.__file__,
                      "loaded": sorted(m for m in {server_only!r} if m in sys.modules)}}))
""").format(server_only=SERVER_ONLY, account=PROD_ACCOUNT)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding `pip install <this repository>`: the base install, no extras."""
    root = tmp_path_factory.mktemp("client-venv")
    source = root / "source"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(REPO / "notify_pipeline", source / "notify_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)], check=True,
                   timeout=900, capture_output=True)
    return venv


def test_client_only_install_sends_and_the_server_delivers(client_venv, local, tmp_path):
    inbox = local.settings.inbox_dir.resolve().as_uri()
    env = {**os.environ, **local.env}
    env.pop("PYTHONPATH", None)
    client = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", CLIENT_SCRIPT, inbox], env=env,
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert client.returncode == 0, client.stderr
    report = json.loads(client.stdout)
    assert report["dagster_fails"] is True
    assert report["missing"] == list(SERVER_ONLY) and report["loaded"] == []
    assert report["package"].startswith(str(client_venv)), "the installed copy, not the tree"
    assert report["ids"][1] == "second"

    server = subprocess.run(
        [sys.executable, "-m", "notify_pipeline.cli", "process"], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )
    assert server.returncode == 0, server.stderr
    summary = json.loads(server.stdout)
    assert (summary["delivered"], summary["rejected"]) == (2, {})
    mail = b"\n".join(local.maildir())
    assert b"From a client-only install" in mail and b"Subject: Second" in mail
