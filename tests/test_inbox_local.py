"""The local inbox: a folder of request files, staged into batch folders oldest first."""

from __future__ import annotations

import os
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_pipeline.inbox.local import LocalInbox

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

    def counted(self: LocalInbox) -> Iterator[tuple[int, str]]:
        nonlocal listings
        listings += 1
        return real(self)

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


def test_a_directory_named_like_a_request_is_never_staged(tmp_path: Path) -> None:
    box = LocalInbox(tmp_path)
    write(box, "a.json", datetime.now(UTC) - timedelta(hours=1))
    (box.inbox_dir / "b.json").mkdir()

    assert box.waiting() == 1
    batch = box.stage(max_items=10, max_age_seconds=0, now=datetime.now(UTC))
    assert batch is not None and staged_names(box, batch) == ["a.json"]
    assert (box.inbox_dir / "b.json").is_dir()


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
