"""The watched registry: changes come into force within `check_seconds`; broken ones never do."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from notify_pipeline.registry import RegistryError
from notify_pipeline.registry_watch import RegistryWatch, registry_fingerprint
from tests.helpers import REGISTRY

MY_APP = """\
id: my-app
display_name: My App
local_part: my-app
technical_contacts: [me@example.org]
service_accounts: [my-app@my-project.iam.gserviceaccount.com]
environment: production
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(REGISTRY, target)
    return target


def test_a_new_service_comes_into_force_after_the_check_interval(folder):
    clock = Clock()
    watch = RegistryWatch(folder, check_seconds=2.0, clock=clock)
    (folder / "my-app.yaml").write_text(MY_APP)
    assert "my-app" not in watch.current(), "not checked again before the interval"
    clock.now = 2.0
    assert "my-app" in watch.current()
    assert watch.problem is None


def test_a_broken_change_keeps_the_last_good_registry_and_is_reported_once(folder, caplog):
    clock = Clock()
    watch = RegistryWatch(folder, check_seconds=1.0, clock=clock)
    before = set(watch.current())
    (folder / "my-app.yaml").write_text(MY_APP.replace("local_part: my-app\n", ""))
    with caplog.at_level(logging.WARNING, logger="notify_pipeline.registry_watch"):
        for tick in range(1, 4):
            clock.now = float(tick)
            assert set(watch.current()) == before
    assert isinstance(watch.problem, RegistryError)
    assert "my-app.yaml: local_part" in str(watch.problem)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "once per change, not once per check"
    assert "last good registry (4 services) stays in force" in warnings[0].getMessage()
    (folder / "my-app.yaml").write_text(MY_APP)
    clock.now = 10.0
    assert "my-app" in watch.current() and watch.problem is None


def test_a_removed_service_leaves_the_registry(folder):
    watch = RegistryWatch(folder, check_seconds=0.0)
    (folder / "hr-reminders.yaml").unlink()
    assert "hr-reminders" not in watch.current()


def test_a_rewrite_changes_the_fingerprint_even_with_the_same_size(folder):
    before = registry_fingerprint(folder)
    path = folder / "hr-reminders.yaml"
    path.write_text(path.read_text().replace("HR Reminders", "HR Remindery"))
    assert registry_fingerprint(folder) != before


def test_a_registry_broken_from_the_start_is_refused(folder):
    (folder / "my-app.yaml").write_text("id: my-app\n")
    with pytest.raises(RegistryError):
        RegistryWatch(folder)
