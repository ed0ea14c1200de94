"""`notify registry diff`: the changes a reviewer must look at, as text and JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from notify_pipeline.cli import main
from notify_pipeline.registry import load_registry
from notify_pipeline.registry_diff import Effect, diff_registries
from tests.helpers import REGISTRY


@pytest.fixture
def old(tmp_path: Path) -> Path:
    folder = tmp_path / "old"
    shutil.copytree(REGISTRY, folder)
    return folder


@pytest.fixture
def new(tmp_path: Path, old: Path) -> Path:
    folder = tmp_path / "new"
    shutil.copytree(old, folder)
    return folder


def edit(folder: Path, service: str, old: str, new: str) -> None:
    path = folder / f"{service}.yaml"
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new, 1))


def changes(old: Path, new: Path) -> dict[tuple[str, str], tuple[Effect, bool]]:
    return {(c.service, c.field): (c.effect, c.attention)
            for c in diff_registries(load_registry(old), load_registry(new))}


def test_an_identical_registry_has_no_changes(old: Path, new: Path) -> None:
    (new / "hr-reminders.yaml").write_text(
        "# reformatted\n" + (new / "hr-reminders.yaml").read_text())
    assert changes(old, new) == {}


def test_widening_changes_need_attention(old: Path, new: Path) -> None:
    edit(new, "lookup-notices", "service_accounts: [",
         "service_accounts: [extra@p-1234.iam.gserviceaccount.com, ")
    edit(new, "lookup-notices", "advanced:\n", "advanced:\n  smtp: true\n"
         "  custom_domains: [mail.lookup.example.com]\n")
    edit(new, "lookup-notices-test", "allowed_recipients:\n", "allowed_recipients:\n"
         "  - someone@example.org\n")
    found = changes(old, new)
    assert found[("lookup-notices", "service_accounts")] == (Effect.WIDENED, True)
    assert found[("lookup-notices", "advanced.smtp")] == (Effect.WIDENED, True)
    assert found[("lookup-notices", "advanced.custom_domains")] == (Effect.WIDENED, True)
    assert found[("lookup-notices-test", "allowed_recipients")] == (Effect.WIDENED, True)


def test_narrowing_changes_do_not(old: Path, new: Path) -> None:
    text = (new / "lookup-notices-test.yaml").read_text()
    lines = [line for line in text.splitlines() if "lookup-qa@" not in line]
    (new / "lookup-notices-test.yaml").write_text("\n".join(lines) + "\n")
    edit(new, "lookup-notices", "display_name: Lookup Notices", "display_name: Lookup")
    found = changes(old, new)
    assert found[("lookup-notices-test", "allowed_recipients")] == (Effect.NARROWED, False)
    assert found[("lookup-notices", "display_name")] == (Effect.CHANGED, False)


def test_lifting_an_allow_list_is_widening(old: Path, new: Path) -> None:
    path = new / "lookup-notices-test.yaml"
    kept = [line for line in path.read_text().splitlines()
            if not line.startswith(("allowed_recipients", "  - "))]
    path.write_text("\n".join(kept) + "\n")
    assert changes(old, new)[("lookup-notices-test", "allowed_recipients")] == (
        Effect.WIDENED, True)
    assert changes(new, old)[("lookup-notices-test", "allowed_recipients")] == (
        Effect.NARROWED, False)


def test_new_and_removed_services(old: Path, new: Path) -> None:
    text = (new / "hr-reminders.yaml").read_text()
    (new / "hr-reminders.yaml").unlink()
    (new / "payroll.yaml").write_text(
        text.replace("id: hr-reminders", "id: payroll").replace("local_part: ", "local_part: pay"))
    found = changes(old, new)
    assert found[("payroll", "")] == (Effect.ADDED, True)
    assert found[("hr-reminders", "")] == (Effect.REMOVED, False)


def test_cli_text_json_and_exit_codes(old: Path, new: Path, capsys) -> None:
    assert main(["registry", "diff", str(old), str(new)]) == 0
    assert capsys.readouterr().out == "0 change(s), 0 needing attention\n"
    edit(new, "lookup-notices", "advanced:\n", "advanced:\n  smtp: true\n")
    assert main(["registry", "diff", str(old), str(new)]) == 1
    assert capsys.readouterr().out == (
        "~ lookup-notices: advanced.smtp widened: false -> true  [needs attention]\n"
        "1 change(s), 1 needing attention\n")
    assert main(["registry", "diff", "--json", str(old), str(new)]) == 1
    assert json.loads(capsys.readouterr().out) == {"needs_attention": 1, "changes": [
        {"service": "lookup-notices", "field": "advanced.smtp", "effect": "widened",
         "old": False, "new": True, "needs_attention": True}]}


def test_cli_refuses_a_broken_registry(old: Path, new: Path, capsys) -> None:
    (new / "lookup-notices.yaml").write_text("id: lookup-notices\n")
    assert main(["registry", "diff", str(old), str(new)]) == 2
    assert "lookup-notices.yaml: display_name: is required" in capsys.readouterr().err


def test_cli_compares_with_a_git_revision(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REGISTRY, repo / "registry")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "registry")
    edit(repo / "registry", "lookup-notices", "advanced:\n",
         "advanced:\n  bounce_forwarding: [ops@example.org]\n")
    assert main(["registry", "diff", "--git", "HEAD", str(repo / "registry")]) == 1
    assert "advanced.bounce_forwarding widened: + ops@example.org" in capsys.readouterr().out
    assert main(["registry", "diff", "--git", "no-such-rev", str(repo / "registry")]) == 2
    assert "--git: git archive failed" in capsys.readouterr().err
