"""What a registry change does, for the reviewer of a merge request (`notify registry diff`).

Services are compared field by field on their validated form (defaults filled in), so a change
that only reformats a file shows nothing. Each change is classed: a new service, a widened grant
(more senders, more recipients, a new advanced option, a higher limit, more readers) needs
attention; a narrowed one or a cosmetic one does not.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from notify_pipeline.registry import Registry, Service, load_registry

# Lists where an added entry grants something: who may send, to whom, from where, who reads.
_GRANTING_LISTS = frozenset({
    "service_accounts", "allowed_recipients", "advanced.custom_domains",
    "advanced.bounce_forwarding", "reporting_principals", "technical_principals",
})
# Scalars whose every change matters: they move the From address or the service's standing.
_SENSITIVE = frozenset({"local_part", "use_testing_domain", "environment",
                        "advanced.dedicated_ip_pool"})


class Effect(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    WIDENED = "widened"
    NARROWED = "narrowed"
    CHANGED = "changed"


@dataclass(frozen=True)
class Change:
    """One difference: `field` is a dotted path, empty for a whole service added or removed."""

    service: str
    field: str
    effect: Effect
    old: Any
    new: Any
    attention: bool

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "field": self.field, "effect": self.effect.value,
                "old": self.old, "new": self.new, "needs_attention": self.attention}

    def __str__(self) -> str:
        flag = "  [needs attention]" if self.attention else ""
        if not self.field:
            sign = "+" if self.effect is Effect.ADDED else "-"
            return f"{sign} service {self.service} ({self.effect.value}){flag}"
        return f"~ {self.service}: {self.field} {self.effect.value}: {_describe(self)}{flag}"


def _describe(change: Change) -> str:
    old, new = change.old, change.new
    if isinstance(old, list) and isinstance(new, list):
        added = [f"+ {v}" for v in new if v not in old]
        removed = [f"- {v}" for v in old if v not in new]
        return ", ".join(added + removed)
    return f"{_shown(old)} -> {_shown(new)}"


def _shown(value: Any) -> str:
    if value is None:
        return "(absent)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def diff_registries(old: Registry, new: Registry) -> list[Change]:
    """Every change from `old` to `new`, by service id, then field."""
    changes: list[Change] = []
    for service_id in sorted(set(old) | set(new)):
        if service_id not in old:
            changes.append(Change(service_id, "", Effect.ADDED, None, _flat(new[service_id]),
                                  attention=True))
        elif service_id not in new:
            changes.append(Change(service_id, "", Effect.REMOVED, _flat(old[service_id]), None,
                                  attention=False))
        else:
            changes += _service_changes(service_id, old[service_id], new[service_id])
    return changes


def _service_changes(service_id: str, old: Service, new: Service) -> Iterator[Change]:
    before, after = _flat(old), _flat(new)
    for field in sorted(set(before) | set(after)):
        a, b = before.get(field), after.get(field)
        if a != b:
            effect = _effect(field, a, b)
            yield Change(service_id, field, effect, a, b, attention=_attention(field, effect))


def _effect(field: str, old: Any, new: Any) -> Effect:
    if field == "allowed_recipients" and (old is None or new is None):
        return Effect.WIDENED if new is None else Effect.NARROWED  # absent: anyone
    if isinstance(old, list) and isinstance(new, list):
        if field == "allowed_recipients" or field in _GRANTING_LISTS:
            return Effect.WIDENED if set(new) - set(old) else Effect.NARROWED
        return Effect.CHANGED
    if isinstance(old, bool) or isinstance(new, bool):
        if field.startswith("advanced."):
            return Effect.WIDENED if new else Effect.NARROWED
        return Effect.CHANGED
    if field.startswith("limits.") and _numbers(old, new):
        return Effect.WIDENED if new > old else Effect.NARROWED
    if field.startswith("limits."):
        return Effect.WIDENED if new is None else Effect.CHANGED  # absent: deployment default
    return Effect.CHANGED


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _attention(field: str, effect: Effect) -> bool:
    if effect is Effect.WIDENED:
        return True
    return field in _SENSITIVE or (field.startswith("limits.") and effect is Effect.CHANGED)


def _flat(service: Service) -> dict[str, Any]:
    """The service's fields as dotted paths to JSON values (lists sorted, for set comparison)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            out[prefix] = sorted(value) if isinstance(value, list) else value

    walk("", service.model_dump(mode="json"))
    return out


def registry_at_revision(directory: Path, revision: str) -> Registry:
    """The registry folder `directory` as it was at git `revision` (of its repository)."""
    top = _git(directory, "rev-parse", "--show-toplevel").decode().strip()
    relative = Path(directory).resolve().relative_to(Path(top).resolve()).as_posix()
    archive = _git(Path(top), "archive", "--format=tar", revision, "--", relative)
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(scratch, filter="data")
        return load_registry(Path(scratch) / relative)


class RevisionError(ValueError):
    """git could not give the registry at a revision; says what git said."""


def _git(cwd: Path, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise RevisionError(f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
