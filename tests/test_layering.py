"""The layering: only the Dagster layer imports Dagster, and adapters never read `Settings`.

The Dagster layer is a fixed list of modules and packages; everything else under
`notify_pipeline/` is core, so a new package is core until it is listed here. The rules are
checked on the source with `ast`, so imports inside functions (lazy imports) and
`importlib.import_module("...")` calls with a literal name count as much as module-level ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = "notify_pipeline"
# Top-level modules and packages of notify_pipeline that make up the Dagster layer.
DAGSTER_LAYER = frozenset({
    "definitions", "jobs", "sensors", "assets", "resources", "bigquery_resource", "profiles",
    "cli", "run_retention", "schedules",
})
ADAPTERS = frozenset({"delivery", "inbox", "ledger", "warehouse", "provider_events"})
SETTINGS = f"{PACKAGE}.settings"


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.rule}"


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(module: str) -> str:
    """The first name under the package (`sensors` for `notify_pipeline.sensors.inbox`)."""
    return module.split(".")[1] if "." in module else ""


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything `tree` imports, wherever the import statement is."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and (name := _imported_by_call(node)):
            yield node.lineno, name


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imported_by_call(node: ast.Call) -> str | None:
    """The literal name passed to `importlib.import_module` or `__import__`, if this is one."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
    first = node.args[0] if node.args else None
    if named and isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def violations(root: Path) -> list[Violation]:
    """Every import under `root/notify_pipeline` that breaks a layering rule, once per line and
    rule (`from dagster import op` is one violation, not two)."""
    found: dict[tuple[str, int, str], Violation] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        module = module_name(root, path)
        top = _top(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in imported_names(tree, module, path.name == "__init__.py"):
            rule = _broken_rule(top, name)
            if rule:
                found.setdefault((module, line, rule), Violation(module, line, name, rule))
    return list(found.values())


def _broken_rule(top: str, name: str) -> str | None:
    first = name.split(".")[0]
    if top in DAGSTER_LAYER:
        return None
    if first == "dagster" or first.startswith("dagster_"):
        return "only the Dagster layer may import Dagster"
    parts = name.split(".")
    if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in DAGSTER_LAYER:
        return "core code must not import the Dagster layer"
    if top in ADAPTERS and (name == SETTINGS or name.startswith(SETTINGS + ".")):
        return "adapters take explicit arguments and never read Settings"
    return None


def assert_layered(root: Path) -> None:
    found = violations(root)
    if found:
        raise AssertionError("layering broken:\n" + "\n".join(f"  {v}" for v in found))


def test_the_package_keeps_its_layers() -> None:
    assert_layered(REPO)


def test_core_modules_import_without_dagster() -> None:
    """Importing every core module loads no Dagster module, not even through a third party."""
    modules = (module_name(REPO, path) for path in (REPO / PACKAGE).rglob("*.py"))
    core = sorted(name for name in modules if _top(name) not in DAGSTER_LAYER)
    script = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'"
        " or m.startswith('dagster_'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    assert len(core) > 20  # the walk found the package
    assert result.stdout.strip() == ""


def write(root: Path, relative: str, source: str) -> None:
    path = root / PACKAGE / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def test_the_checker_names_each_module_and_import_that_breaks_a_rule(tmp_path: Path) -> None:
    write(tmp_path, "__init__.py", "")
    write(tmp_path, "mime.py", "def render():\n    import dagster as dg\n    return dg\n")
    write(tmp_path, "client/__init__.py", "from dagster_gcp import BigQueryResource\n")
    write(tmp_path, "inbox/fast.py", "from notify_pipeline.settings import Settings\n")
    write(tmp_path, "ledger/__init__.py", "from .. import settings\n")
    write(tmp_path, "warehouse/lazy.py",
          "import importlib\n\n\ndef load():\n    return importlib.import_module('dagster')\n")
    write(tmp_path, "policy.py", "from notify_pipeline.resources import DeploymentResource\n")
    # allowed: the Dagster layer imports Dagster; core code may read Settings
    write(tmp_path, "resources.py", "import dagster\nfrom dagster_gcp import BigQueryResource\n")
    write(tmp_path, "sensors/inbox.py", "import dagster as dg\n")
    write(tmp_path, "registry.py", "from notify_pipeline.settings import Settings\n")

    with pytest.raises(AssertionError) as failure:
        assert_layered(tmp_path)

    listed = [line.strip() for line in str(failure.value).splitlines()[1:] if line.strip()]
    assert listed == [
        "notify_pipeline.client:1 imports dagster_gcp: only the Dagster layer may import Dagster",
        "notify_pipeline.inbox.fast:1 imports notify_pipeline.settings: adapters take explicit"
        " arguments and never read Settings",
        "notify_pipeline.ledger:1 imports notify_pipeline.settings: adapters take explicit"
        " arguments and never read Settings",
        "notify_pipeline.mime:2 imports dagster: only the Dagster layer may import Dagster",
        "notify_pipeline.policy:1 imports notify_pipeline.resources: core code must not import"
        " the Dagster layer",
        "notify_pipeline.warehouse.lazy:5 imports dagster: only the Dagster layer may import"
        " Dagster",
    ]
