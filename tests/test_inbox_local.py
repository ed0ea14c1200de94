"""The local inbox: a folder of request files, staged into batch folders oldest first."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_pipeline.inbox.local import FINISHED_DIR, LocalInbox, wait_for_removals
from notify_pipeline.inbox.retention import KeptRetention

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def write(box: LocalInbox, name: str, received: datetime) -> None:
    path = box.write_request(b"{}", name)
    os.utime(path, (received.timestamp(), received.timestamp()))


def staged_names(box: LocalInbox, batch_id: str) -> list[str]:
    return sorted(item.key for item in box.read(batch_id))


def test_stage_takes_the_oldest_by_receive_time_not_by_name(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    for n, name in enumerate(["a.json", "b.json", "c.json", "d.json"]):
        write(box, name, NOW - timedelta(seconds=n))  # d is the oldest, a the newest

    batch_id = box.stage(max_items=2, max_age_seconds=60, now=NOW)

    assert batch_id is not None
    assert staged_names(box, batch_id) == ["c.json", "d.json"]
    assert box.waiting() == 2


def test_stage_waits_for_a_full_batch_or_an_old_enough_request(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    write(box, "a.json", NOW - timedelta(seconds=1))
    assert box.stage(max_items=2, max_age_seconds=5, now=NOW) is None, "not full, not old"
    assert box.stage(max_items=1, max_age_seconds=5, now=NOW) is not None, "full"
    write(box, "b.json", NOW - timedelta(seconds=10))
    assert box.stage(max_items=2, max_age_seconds=5, now=NOW) is not None, "old enough"
    assert box.waiting() == 0
    assert box.stage(max_items=2, max_age_seconds=0, now=NOW) is None, "nothing waiting"


def test_staging_from_a_large_backlog_holds_one_batch_in_memory(tmp_path: Path) -> None:
    """Staging 10 of 5,000 waiting requests must not list all 5,000 in memory at once (it
    did: a 90,000-request backlog cost ~70 MB per staging pass)."""
    box = LocalInbox(tmp_path)
    for n in range(5000):
        write(box, f"r{n:05d}.json", NOW - timedelta(seconds=n))

    tracemalloc.start()
    try:
        batch_id = box.stage(max_items=10, max_age_seconds=60, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert batch_id is not None
    assert staged_names(box, batch_id) == [f"r{n:05d}.json" for n in range(4990, 5000)]
    assert peak < 200_000, f"staging held {peak} bytes"


def test_two_stagers_at_once_put_every_request_in_exactly_one_batch(tmp_path: Path) -> None:
    """A worker run and the per-batch sensor may stage at the same moment during a hand-over."""
    box = LocalInbox(tmp_path)
    for n in range(600):
        write(box, f"r{n:04d}.json", NOW - timedelta(seconds=n))
    errors: list[BaseException] = []

    def stager() -> None:
        own = LocalInbox(tmp_path)  # as a second process would: its own object
        try:
            while own.stage(max_items=7, max_age_seconds=0, now=NOW) is not None:
                pass
        except BaseException as exc:  # collected: the test fails on any of them
            errors.append(exc)

    threads = [threading.Thread(target=stager) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    staged = Counter(item.key for batch in box.batches() for item in box.read(batch))
    assert staged == Counter({f"r{n:04d}.json": 1 for n in range(600)})
    assert box.waiting() == 0


def test_stage_many_takes_several_batches_oldest_first_from_one_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = LocalInbox(tmp_path)
    for n in range(7):
        write(box, f"r{n}.json", NOW - timedelta(seconds=100 - n))  # r0 oldest
    write(box, "fresh.json", NOW)  # too young to go alone
    listings = 0
    real = LocalInbox._waiting_files

    def counted(self: LocalInbox, **kwargs: bool) -> Iterator[tuple[int, str]]:
        nonlocal listings
        listings += 1
        return real(self, **kwargs)

    monkeypatch.setattr(LocalInbox, "_waiting_files", counted)
    staged = list(box.stage_many(max_items=3, max_age_seconds=50, now=NOW, max_batches=5))

    assert listings == 1
    assert [staged_names(box, b) for b in staged] == [
        ["r0.json", "r1.json", "r2.json"], ["r3.json", "r4.json", "r5.json"],
        ["fresh.json", "r6.json"],  # r6 is old enough to take the newest with it
    ]
    assert box.waiting() == 0
    write(box, "late.json", NOW)
    assert list(box.stage_many(max_items=3, max_age_seconds=50, now=NOW, max_batches=5)) == []
    assert box.waiting() == 1, "a lone young request waits for company"


def test_a_directory_named_like_a_request_is_set_aside_once_and_kept_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker stages about four times a second: a `*.json` directory used to be reported on
    every pass. It is moved to `rejected/` once, beside a note, with its contents."""
    box = LocalInbox(tmp_path)
    write(box, "a.json", datetime.now(UTC) - timedelta(hours=1))
    (box.inbox_dir / "b.json" / "deep").mkdir(parents=True)
    (box.inbox_dir / "b.json" / "deep" / "payload.txt").write_bytes(b"keep me")
    caplog.set_level("WARNING", logger="notify_pipeline.inbox.local")

    assert box.waiting() == 1, "counting waiting requests passes over it"
    assert (box.inbox_dir / "b.json").is_dir(), "and moves nothing: only stagers hold the lock"
    batch = box.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC))
    for _ in range(200):
        assert box.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC)) is None
        assert box.waiting() == 0

    assert batch is not None and staged_names(box, batch) == ["a.json"]
    assert not (box.inbox_dir / "b.json").exists()
    [moved] = [p for p in box.rejected_dir.iterdir() if p.name.endswith("--b.json")]
    assert (moved / "deep" / "payload.txt").read_bytes() == b"keep me"
    note = moved.with_name(moved.name + ".reason").read_text()
    assert note.startswith("not_a_file: ") and "'b.json'" in note
    reports = [r for r in caplog.records if "b.json" in r.getMessage()]
    assert len(reports) == 1 and "not a file" in reports[0].getMessage()


def test_two_non_files_of_the_same_name_are_both_kept(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    for n in range(2):
        (box.inbox_dir / "b.json").mkdir(parents=True)
        (box.inbox_dir / "b.json" / f"{n}.txt").write_text(str(n))
        assert box.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC)) is None
    moved = sorted(p for p in box.rejected_dir.iterdir() if p.name.endswith("--b.json"))
    assert sorted(f.name for p in moved for f in p.iterdir()) == ["0.txt", "1.txt"]


def test_an_entry_in_a_batch_that_cannot_be_read_is_set_aside(tmp_path: Path) -> None:
    """A directory staged by an older version: the batch still reads, and can finish."""
    box = LocalInbox(tmp_path)
    write(box, "a.json", datetime.now(UTC) - timedelta(hours=1))
    batch = box.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC))
    assert batch is not None
    (box.batch_dir / batch / "b.json").mkdir()

    assert [item.key for item in box.read(batch)] == ["a.json"]
    box.finish(batch, ["a.json"])
    assert box.batches() == []
    assert (box.rejected_dir / f"{batch}--b.json").is_dir()


def staged_batch(box: LocalInbox, names: list[str]) -> str:
    for name in names:
        write(box, name, datetime.now(UTC) - timedelta(hours=1))
    batch = box.stage(max_items=len(names), max_age_seconds=0, now=datetime.now(UTC))
    assert batch is not None
    return batch


def request_files(box: LocalInbox) -> list[str]:
    """Every request file left under batches/, hidden folders included."""
    return sorted(p.name for p in box.batch_dir.rglob("*.json"))


def test_a_batch_done_whole_leaves_at_once_and_is_removed_in_the_background(
    tmp_path: Path,
) -> None:
    box = LocalInbox(tmp_path)
    batch = staged_batch(box, ["a.json", "b.json", "c.json"])

    box.finish(batch, ["a.json", "b.json", "c.json"])
    assert box.batches() == [] and list(box.read(batch)) == [], "never read again"
    assert wait_for_removals(timeout=10)
    assert request_files(box) == []
    assert list((box.batch_dir / FINISHED_DIR).iterdir()) == []


def test_a_batch_done_in_part_keeps_the_rest_in_place(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    batch = staged_batch(box, ["a.json", "b.json", "c.json"])

    box.finish(batch, ["a.json", "c.json"])
    assert box.batches() == [batch]
    assert staged_names(box, batch) == ["b.json"]
    box.finish(batch, ["b.json"])
    assert wait_for_removals(timeout=10)
    assert box.batches() == [] and request_files(box) == []


def test_what_a_dead_process_left_finished_is_removed_by_the_next_finish(
    tmp_path: Path,
) -> None:
    box = LocalInbox(tmp_path)
    left = box.batch_dir / FINISHED_DIR / "20261201T000000-0123456789ab.0123456789ab"
    left.mkdir(parents=True)
    (left / "old.json").write_bytes(b"{}")
    assert box.batches() == [], "a finished folder is not a batch"

    box.finish(staged_batch(box, ["new.json"]), ["new.json"])
    assert wait_for_removals(timeout=10)
    assert request_files(box) == []


# retention of kept copies

REGISTERED = frozenset({"svc-a", "svc-b"})


def kept(box: LocalInbox, name: str, body: bytes, age: timedelta) -> Path:
    """A rejected request kept by `quarantine`, then aged `age`."""
    box.quarantine("20261101T000000-0123456789ab", name, body, f"{name}: malformed: test")
    path = box.rejected_dir / f"20261101T000000-0123456789ab--{name}"
    stamp = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def request_of(service: str) -> bytes:
    return json.dumps({"version": 1, "service": service, "identity_token": "t"}).encode()


def retention(days: int = 30, default_days: int = 400) -> KeptRetention:
    now = datetime.now(UTC)
    return KeptRetention(cutoffs={"svc-a": now - timedelta(days=days)},
                         default_cutoff=now - timedelta(days=default_days),
                         registered=REGISTERED)


def test_expire_kept_removes_the_services_old_copies_and_unknown_ones_by_the_default(
    tmp_path: Path,
) -> None:
    box = LocalInbox(tmp_path)
    old_a = kept(box, "old-a.json", request_of("svc-a"), timedelta(days=31))
    young_a = kept(box, "young-a.json", request_of("svc-a"), timedelta(days=29))
    old_b = kept(box, "old-b.json", request_of("svc-b"), timedelta(days=500))
    gone = kept(box, "gone.json", request_of("removed-svc"), timedelta(days=401))
    junk = kept(box, "junk.json", b"\xff not json", timedelta(days=401))
    young_junk = kept(box, "young-junk.json", b"[1, 2", timedelta(days=399))
    aside = box.rejected_dir / "20261101T000000-0123456789ab--dir.json"
    (aside / "inner").mkdir(parents=True)
    stamp = (datetime.now(UTC) - timedelta(days=401)).timestamp()
    os.utime(aside, (stamp, stamp))
    write(box, "waiting.json", NOW - timedelta(days=900))
    write(box, "staged.json", NOW - timedelta(days=900))
    batch = box.stage(max_items=1, max_age_seconds=0, now=NOW)
    assert batch is not None

    expired = box.expire_kept(retention())

    assert (expired.removed, dict(expired.by_kind)) == (4, {"rejected": 4})
    assert (dict(expired.by_service), expired.unattributed, expired.failed) == ({"svc-a": 1}, 3, 0)
    for path in (old_a, gone, junk, aside):
        assert not path.exists() and not path.with_name(path.name + ".reason").exists(), path
    for path in (young_a, old_b, young_junk):
        assert path.is_file() and path.with_name(path.name + ".reason").is_file(), path
    assert box.waiting() == 1, "a waiting request is not a kept copy, however old"
    assert box.batches() == [batch] and len(list(box.read(batch))) == 1
    again = box.expire_kept(retention())
    assert (again.removed, again.failed) == (0, 0), "a second pass removes nothing"


def test_expire_kept_reads_only_copies_old_enough_to_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = LocalInbox(tmp_path)
    for n in range(20):
        kept(box, f"young-{n}.json", request_of("svc-a"), timedelta(days=1))
    kept(box, "old.json", request_of("svc-a"), timedelta(days=40))
    read: list[str] = []
    real = Path.read_bytes

    def counted(self: Path) -> bytes:
        read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    expired = box.expire_kept(retention())

    assert (expired.removed, expired.examined) == (1, 1)
    assert read == ["20261101T000000-0123456789ab--old.json"]


def test_a_note_left_without_its_copy_expires_by_the_default(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    copy = kept(box, "a.json", request_of("svc-a"), timedelta(days=1))
    copy.unlink()
    note = copy.with_name(copy.name + ".reason")
    stamp = (datetime.now(UTC) - timedelta(days=401)).timestamp()
    os.utime(note, (stamp, stamp))

    expired = box.expire_kept(retention())

    assert (expired.removed, expired.unattributed) == (1, 1)
    assert not note.exists()


def test_expire_kept_with_nothing_kept_is_empty(tmp_path: Path) -> None:
    expired = LocalInbox(tmp_path).expire_kept(retention())
    assert (expired.removed, expired.examined) == (0, 0)
