"""The registry as it is now, for a long-running server: reloaded when a service file changes.

A server started before a service lost `advanced.smtp` must stop accepting it without a restart.
An edit that makes the registry invalid keeps the last valid one in use, and says so.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from notify_pipeline.registry import Registry, RegistryError, load_registry

logger = logging.getLogger(__name__)

_Signature = tuple[tuple[str, int, int], ...]


class LiveRegistry:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._signature: _Signature | None = None
        self._registry: Registry | None = None

    def __call__(self) -> Registry:
        signature = self._signature_now()
        with self._lock:
            if signature != self._signature or self._registry is None:
                self._reload(signature)
            assert self._registry is not None
            return self._registry

    def _reload(self, signature: _Signature) -> None:
        try:
            self._registry = load_registry(self.directory)
        except RegistryError as exc:
            if self._registry is None:
                raise
            logger.warning("registry %s is invalid; still using the previous one:\n%s",
                           self.directory, exc)
        self._signature = signature

    def _signature_now(self) -> _Signature:
        """Name, mtime and size of every service file: any edit, addition or removal shows."""
        try:
            paths = [p for p in self.directory.iterdir() if p.suffix in {".yaml", ".yml"}]
        except FileNotFoundError:
            return ()
        found = []
        for path in sorted(paths):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(found)
