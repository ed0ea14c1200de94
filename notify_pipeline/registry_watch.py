"""The registry as a long-lived run sees it: reloaded when its folder changes, and a broken
change never replaces the last good registry.

A delivery worker lives up to an hour; a service registered meanwhile must not wait for the next
one. The folder is fingerprinted (the names and contents of its service files, a few small
files) at most every `check_seconds`; a new fingerprint is loaded and validated as a whole, and
only a registry that loads replaces the one in force.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from notify_pipeline.registry import Registry, RegistryError, load_registry

log = logging.getLogger(__name__)

SERVICE_FILE_SUFFIXES = (".yaml", ".yml")


def registry_fingerprint(directory: Path) -> str:
    """Changes whenever a service file is added, removed, or rewritten."""
    digest = hashlib.sha256()
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix in SERVICE_FILE_SUFFIXES)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    for path in entries:
        try:
            content = path.read_bytes()
        except OSError:
            continue  # removed while we looked: the next check sees the folder without it
        digest.update(f"{path.name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


class RegistryWatch:
    """The registry in force for a long-lived process; `current()` is cheap between checks."""

    def __init__(
        self,
        directory: Path,
        *,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.check_seconds = check_seconds
        self._clock = clock
        self._fingerprint = registry_fingerprint(directory)
        self._registry = load_registry(directory)  # no last good one yet: a broken one raises
        self._checked_at = clock()
        self.problem: RegistryError | None = None  # set while the folder holds a broken registry

    def current(self) -> Registry:
        """The registry in force, reloaded first if the folder changed since the last check."""
        if self._clock() - self._checked_at >= self.check_seconds:
            self.refresh()
        return self._registry

    def refresh(self) -> bool:
        """Check the folder now; True if a new registry came into force."""
        self._checked_at = self._clock()
        fingerprint = registry_fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint  # a broken change is reported once, not every check
        try:
            registry = load_registry(self.directory)
        except RegistryError as exc:
            self.problem = exc
            log.warning("registry %s changed but does not load; the last good registry (%d"
                        " services) stays in force until it is fixed:\n%s",
                        self.directory, len(self._registry), exc)
            return False
        added = sorted(set(registry) - set(self._registry))
        removed = sorted(set(self._registry) - set(registry))
        self._registry, self.problem = registry, None
        log.info("registry %s reloaded: %d services (added: %s; removed: %s)", self.directory,
                 len(registry), ", ".join(added) or "none", ", ".join(removed) or "none")
        return True
