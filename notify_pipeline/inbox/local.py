"""The local profile's inbox: a folder of `*.json` requests, each written elsewhere and renamed in.

Staging renames files into `batches/<id>/` (atomic per file), first under a hidden
`.staging-<id>` name so a half-staged batch is recognisable and completed after a crash.
The receive time of a request is its file's mtime, which a rename preserves. One stager at a
time holds `batches/.stage.lock` (a worker run and the per-batch sensor can meet while one
worker hands over to the next); the kernel releases it if its holder dies.

A batch whose every request is done leaves `batches/` in one rename, into `batches/.finished/`,
and a thread of the process removes it from there: on a file system where each unlink waits
for the disk (ext4 mounted with `discard`, say), removing a batch's files one by one held the
run up for as long as it took, while nothing else could go on. Hidden folders are never listed
as batches, so a request is never read again once its batch has left; whatever a process left
in `.finished/` when it died is removed by the next one to finish a batch there.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import logging
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from notify_pipeline import files
from notify_pipeline.inbox.base import Inbox, InboxItem
from notify_pipeline.inbox.retention import ExpiredCopies, KeptRetention, service_of
from notify_pipeline.request import redact_token

STAGING_PREFIX = ".staging-"
FINISHED_DIR = ".finished"  # in batches/: finished batches, being removed
REASON_SUFFIX = ".reason"
NOT_A_FILE = "not_a_file"  # the reason code of an inbox entry set aside unread
_log = logging.getLogger(__name__)


class LocalInbox(Inbox):
    def __init__(self, home: Path) -> None:
        self.inbox_dir = home / "inbox"
        self.batch_dir = home / "batches"
        self.rejected_dir = home / "rejected"
        self._unmovable: set[str] = set()  # non-files reported as unmovable, reported once

    def _waiting_files(self, *, set_aside: bool = False) -> Iterator[tuple[int, str]]:
        """(mtime in ns, name) of every waiting request, in directory order.

        A generator, so a backlog of any size costs no memory here: `stage` keeps only the
        oldest `max_items` of it. An entry named like a request that is not a file (a
        directory, say) is never a request: with `set_aside` (the caller holds the staging
        lock) it is moved to `rejected/`, reported once; otherwise it is passed over quietly.
        """
        try:
            with os.scandir(self.inbox_dir) as entries:
                for entry in entries:
                    if not entry.name.endswith(".json") or entry.name.startswith("."):
                        continue
                    try:
                        if not entry.is_file():
                            if set_aside:
                                self._set_aside_non_file(entry.name)
                            continue
                        yield entry.stat().st_mtime_ns, entry.name
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return

    def _set_aside_non_file(self, name: str) -> None:
        """Move a non-file out of the inbox, contents untouched, beside a note saying why, so
        it is reported once and never listed again. Named like a batch's kept copy (a time,
        then a unique tail), so two such entries of the same name never collide."""
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        target = self.rejected_dir / f"{stamp}--{name}"
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        try:
            (self.inbox_dir / name).rename(target)
        except FileNotFoundError:
            return
        except OSError as exc:
            if name not in self._unmovable:
                self._unmovable.add(name)
                _log.warning("inbox: %r is not a file and could not be moved aside (%s); it is"
                             " skipped", name, type(exc).__name__)
            return
        with suppress(OSError):  # kept (and expired by retention) from now, not from its mtime
            os.utime(target, follow_symlinks=False)
        note = f"{NOT_A_FILE}: inbox entry {name!r} is not a file; moved aside unread"
        files.replace(target.with_name(target.name + REASON_SUFFIX), (note + "\n").encode())
        _log.warning("inbox: %r is not a file, so not a request: moved to rejected/%s",
                     name, target.name)

    def waiting(self) -> int:
        return sum(1 for _ in self._waiting_files())

    def stage(self, *, max_items: int, max_age_seconds: float, now: datetime) -> str | None:
        batches = self.stage_many(max_items=max_items, max_age_seconds=max_age_seconds,
                                  now=now, max_batches=1)
        try:
            return next(batches, None)
        finally:
            batches.close()  # releases the staging lock

    def stage_many(
        self, *, max_items: int, max_age_seconds: float, now: datetime, max_batches: int
    ) -> Generator[str, None, None]:
        """One listing for up to `max_batches` batches: with a backlog, each listing stats
        every waiting file, so listing once per batch would multiply that by the batches."""
        with self._staging_lock():
            self._complete_half_staged()
            oldest = heapq.nsmallest(max_items * max_batches,
                                     self._waiting_files(set_aside=True))
            for start in range(0, len(oldest), max_items):
                chosen = oldest[start:start + max_items]
                age = now.timestamp() - chosen[0][0] / 1e9
                if len(chosen) < max_items and age < max_age_seconds:
                    return
                yield self._move(chosen)

    @contextmanager
    def _staging_lock(self) -> Iterator[None]:
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        with (self.batch_dir / ".stage.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _move(self, chosen: list[tuple[int, str]]) -> str:
        batch_id = _batch_id(chosen)
        staging = self.batch_dir / f"{STAGING_PREFIX}{batch_id}"
        staging.mkdir(parents=True, exist_ok=True)
        for _mtime, name in chosen:
            try:
                (self.inbox_dir / name).rename(staging / name)
            except FileNotFoundError:
                continue
        staging.rename(self.batch_dir / batch_id)
        return batch_id

    def _complete_half_staged(self) -> None:
        if not self.batch_dir.exists():
            return
        for path in self.batch_dir.glob(f"{STAGING_PREFIX}*"):
            path.rename(self.batch_dir / path.name.removeprefix(STAGING_PREFIX))

    def batches(self) -> list[str]:
        if not self.batch_dir.exists():
            return []
        found = []
        for path in sorted(self.batch_dir.iterdir()):
            if path.name.startswith("."):
                continue
            with suppress(FileNotFoundError):  # another owner finished it as we looked
                if any(path.iterdir()):
                    found.append(path.name)
                else:
                    path.rmdir()
        return found

    def read(self, batch_id: str) -> Iterator[InboxItem]:
        folder = self.batch_dir / batch_id
        if not folder.exists():
            return
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            try:
                stat, body = path.stat(), path.read_bytes()
            except (IsADirectoryError, PermissionError) as exc:
                self._set_aside(batch_id, path, exc)
                continue
            received = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC)
            yield InboxItem(key=path.name, body=body, received_at=received,
                            arrival=f"{path.name}@{stat.st_mtime_ns}")

    def _set_aside(self, batch_id: str, path: Path, exc: OSError) -> None:
        """An entry that cannot be read as a request (a directory staged before non-files were
        skipped, an unreadable file) would keep the batch open for ever: it moves to
        `rejected/`, reported, and the rest of the batch goes on."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        path.rename(self.rejected_dir / f"{batch_id}--{path.name}")
        _log.warning("batch %s: moved %r to rejected/: %s", batch_id, path.name,
                     type(exc).__name__)

    def finish(self, batch_id: str, keys: Sequence[str]) -> None:
        """Remove the done requests: the whole folder at once when every request in it is
        done (removed in the background), else each done one."""
        folder = self.batch_dir / batch_id
        if _holds_only(folder, keys):
            finished = self.batch_dir / FINISHED_DIR
            finished.mkdir(exist_ok=True)
            with suppress(FileNotFoundError):  # another owner got there first
                folder.rename(finished / f"{batch_id}.{uuid.uuid4().hex[:12]}")
            _SWEEPER.sweep(finished)
            return
        for key in keys:
            (folder / key).unlink(missing_ok=True)
        with suppress(FileNotFoundError):  # another owner emptied it too, and got there first
            if not any(folder.iterdir()):
                folder.rmdir()

    def quarantine(self, batch_id: str, key: str, body: bytes, note: str) -> None:
        """Keep a rejected request beside a note, with its identity token removed."""
        target = files.replace(self.rejected_dir / f"{batch_id}--{key}", redact_token(body))
        (target.with_name(target.name + REASON_SUFFIX)).write_text(note + "\n")

    def expire_kept(self, retention: KeptRetention) -> ExpiredCopies:
        """Remove expired copies in `rejected/` (each with its `.reason`), aged by mtime.

        Nothing else is kept here: finished requests are deleted. Only copies older than the
        latest cutoff are read (to learn their service), so a pass costs a listing and stats.
        """
        tally = ExpiredCopies()
        for path, kept_at in self._kept_before(retention.latest_cutoff):
            tally.examined += 1
            service = _kept_service(path)
            cutoff = retention.cutoff_for(service)
            if cutoff is None or kept_at >= cutoff.timestamp():
                continue
            if _remove_kept(path):
                tally.count("rejected", retention.attributed(service))
            else:
                tally.failed += 1
        return tally

    def _kept_before(self, cutoff: datetime) -> list[tuple[Path, float]]:
        """(path, mtime) of kept copies last modified before `cutoff`, listed before any is
        removed. A `.reason` whose copy is gone stands for that copy."""
        found: list[tuple[Path, float]] = []
        try:
            with os.scandir(self.rejected_dir) as entries:
                for entry in entries:
                    path = Path(entry.path)
                    if entry.name.startswith(".") or (  # a write in progress
                            entry.name.endswith(REASON_SUFFIX)
                            and path.with_name(entry.name.removesuffix(REASON_SUFFIX)).exists()):
                        continue
                    with suppress(FileNotFoundError):
                        kept_at = entry.stat(follow_symlinks=False).st_mtime
                        if kept_at < cutoff.timestamp():
                            found.append((path, kept_at))
        except FileNotFoundError:
            pass
        return found

    def write_request(self, body: bytes, name: str) -> Path:
        """Drop one request into the inbox atomically (write elsewhere, then rename)."""
        return files.replace(self.inbox_dir / name, body, mode=files.SHARED)


def _kept_service(path: Path) -> str | None:
    """The service a kept copy names; None for a directory, an unreadable file or a note."""
    if path.name.endswith(REASON_SUFFIX) or path.is_symlink() or not path.is_file():
        return None
    try:
        return service_of(path.read_bytes())
    except OSError:
        return None


def _remove_kept(path: Path) -> bool:
    """Its note first, then the copy: a crash in between leaves a copy a later pass removes.
    False (reported, left for the next pass) when the file system refuses."""
    try:
        path.with_name(path.name + REASON_SUFFIX).unlink(missing_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        _log.warning("rejected/: could not remove expired %r: %s", path.name, type(exc).__name__)
        return False
    return True


def _holds_only(folder: Path, keys: Sequence[str]) -> bool:
    """Whether every request in `folder` is among `keys` (False if it is gone)."""
    try:
        with os.scandir(folder) as entries:
            names = {entry.name for entry in entries if not entry.name.startswith(".")}
    except FileNotFoundError:
        return False
    return names <= set(keys)


class _Sweeper:
    """The process's one thread removing finished batches' folders, so their unlinks wait for
    the disk off the run's path. `sweep` asks it to empty a `.finished/` folder: what is in it
    now, this batch's and any a dead process left. A folder it cannot remove stays for the next
    sweep; one whose removal the process's exit cut short, for the next process's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def sweep(self, finished: Path) -> None:
        with self._lock:
            self._idle.clear()
            self._asked.put(finished)
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(target=self._run, name="inbox-sweeper",
                                                daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything asked so far is removed (or found unremovable)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            finished = self._asked.get()
            try:
                for path in sorted(finished.iterdir()):
                    with suppress(FileNotFoundError):  # another process is removing it too
                        shutil.rmtree(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                _log.warning("batches/%s: could not remove a finished batch (%s); the next"
                             " finished batch tries again", FINISHED_DIR, type(exc).__name__)
            with self._lock:
                if self._asked.empty():
                    self._idle.set()


_SWEEPER = _Sweeper()


def wait_for_removals(timeout: float | None = None) -> bool:
    """Wait until this process has removed every batch it finished; False on a timeout."""
    return _SWEEPER.wait(timeout)


def _batch_id(files: Sequence[tuple[int, str]]) -> str:
    """Deterministic from the staged files: the oldest item's time plus a digest of them all."""
    digest = hashlib.sha256()
    for mtime, name in files:
        digest.update(f"{mtime}\x1f{name}\x1e".encode())
    stamp = datetime.fromtimestamp(files[0][0] / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{digest.hexdigest()[:12]}"

