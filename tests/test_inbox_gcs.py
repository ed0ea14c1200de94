"""The GCS inbox against a real GCS emulator (fake-gcs-server), and through the real pipeline.

Pipeline-level tests run `Pipeline.process_batch` with the real SQLite ledger, local-profile
identity tokens and a transport that records hand-offs (a stand-in for our own `Transport`
interface, not for any Google API).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from google.cloud import storage

from notify_pipeline.errors import ConfigError
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.inbox.gcs import GcsInbox
from notify_pipeline.inbox.gcs_store import REASON, SERVICE, CallLimits, GcsBatchStore
from notify_pipeline.inbox.retention import KeptRetention
from tests.conftest import LocalDeployment
from tests.helpers import MAX_BYTES, Harness, make_harness

if TYPE_CHECKING:  # imported at run time by pytest_plugins, so that pytest rewrites its asserts
    from tests.emulators.gcs import GcsEmulator


LIMITS = CallLimits(timeout_seconds=10.0, retry_seconds=10.0)


@pytest.fixture
def harness(local: LocalDeployment) -> Iterator[Harness]:
    built = make_harness(local)
    yield built
    built.ledger.close()


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> storage.Bucket:
    return gcs_emulator.new_bucket()


def make_inbox(bucket: storage.Bucket, *, stale_after_seconds: float = 300.0,
               **kwargs: Any) -> GcsInbox:
    store = GcsBatchStore(bucket, stale_after_seconds=stale_after_seconds, limits=LIMITS)
    return GcsInbox(store, **kwargs)


def upload(bucket: storage.Bucket, name: str, body: bytes | dict[str, Any]) -> storage.Blob:
    """A client's request: one object under inbox/ (the returned blob knows its timeCreated)."""
    blob = bucket.blob(f"inbox/{name}")
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    blob.upload_from_string(data, timeout=30)
    return blob


def contents(bucket: storage.Bucket) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Every object in the bucket: name → (bytes, metadata)."""
    return {b.name: (b.download_as_bytes(timeout=30), b.metadata or {})
            for b in bucket.list_blobs(timeout=10)}


def now() -> datetime:
    return datetime.now(UTC)


def staged(inbox: Inbox, max_items: int) -> str:
    """Stage whatever waits (no age bound), expecting a batch."""
    batch = inbox.stage(max_items=max_items, max_age_seconds=0, now=now())
    assert batch is not None
    return batch


def staging_markers(bucket: storage.Bucket) -> list[str]:
    return [b.name for b in bucket.list_blobs(prefix="staging/", timeout=10)]


# staging


def test_stage_waits_for_enough_requests_or_an_old_enough_one(bucket):
    inbox = make_inbox(bucket)
    for n in range(3):
        upload(bucket, f"r{n}.json", b"{}")

    assert inbox.stage(max_items=4, max_age_seconds=60, now=now()) is None
    assert (inbox.waiting(), inbox.batches()) == (3, [])

    upload(bucket, "r3.json", b"{}")
    full = inbox.stage(max_items=4, max_age_seconds=60, now=now())
    assert full is not None
    assert (inbox.waiting(), inbox.batches()) == (0, [full])

    upload(bucket, "r4.json", b"{}")
    assert inbox.stage(max_items=4, max_age_seconds=60, now=now()) is None
    aged = inbox.stage(max_items=4, max_age_seconds=60, now=now() + timedelta(seconds=61))
    assert aged is not None
    assert sorted(inbox.batches()) == sorted([full, aged])
    assert [i.key for i in inbox.read(aged)] == ["r4.json"]


def test_stage_takes_the_oldest_by_time_created_not_by_name(bucket):
    inbox = make_inbox(bucket)
    for name in ("c.json", "b.json", "a.json"):  # c is the oldest
        upload(bucket, name, b"{}")

    batch = staged(inbox, 2)

    assert batch is not None
    assert sorted(i.key for i in inbox.read(batch)) == ["b.json", "c.json"]
    assert inbox.waiting() == 1


def test_folder_placeholders_are_not_requests(bucket):
    inbox = make_inbox(bucket)
    upload(bucket, "", b"")
    upload(bucket, "team-a/", b"")
    upload(bucket, "team-a/folder.json/", b"")  # a folder named like a request

    assert inbox.waiting() == 0
    assert inbox.stage(max_items=1, max_age_seconds=0, now=now()) is None


def test_items_carry_their_body_and_original_time_created(bucket):
    inbox = make_inbox(bucket)
    original = upload(bucket, "team-a/r1.json", b'{"x": 1}')

    batch = staged(inbox, 1)

    [item] = list(inbox.read(batch))
    assert (item.key, item.body) == ("team-a/r1.json", b'{"x": 1}')
    assert item.received_at == original.time_created
    copy = bucket.get_blob(f"batches/{batch}/team-a/r1.json", timeout=10)
    assert copy.time_created > original.time_created, "the copy's own time is not the receive time"
    assert inbox.waiting() == 0 and bucket.get_blob(original.name, timeout=10) is None


def test_listing_is_followed_across_pages_and_capped(bucket):
    for n in range(25):
        upload(bucket, f"r{n:02d}.json", b"{}")

    paged = make_inbox(bucket, page_size=10)
    assert paged.waiting() == 25
    batch = paged.stage(max_items=25, max_age_seconds=3600, now=now())
    assert batch is not None, "25 waiting fill a batch of 25 only if all three pages are read"
    assert len(list(paged.read(batch))) == 25

    for n in range(25):
        upload(bucket, f"s{n:02d}.json", b"{}")
    capped = make_inbox(bucket, page_size=5, scan_limit=12)
    assert capped.waiting() == 12
    assert capped.stage(max_items=20, max_age_seconds=3600, now=now()) is not None, (
        "a batch larger than the scan limit widens the scan to the batch size")


def test_same_objects_restaged_after_a_crash_keep_their_batch_id(bucket, monkeypatch):
    inbox = make_inbox(bucket)
    for n in range(2):
        upload(bucket, f"r{n}.json", b"{}")

    def crash(blob):
        raise RuntimeError("stager killed before deleting the originals")

    with monkeypatch.context() as patched:
        patched.setattr(inbox.store, "delete", crash)
        with pytest.raises(RuntimeError):
            inbox.stage(max_items=2, max_age_seconds=0, now=now())
    [marker] = staging_markers(bucket)
    assert inbox.batches() == [], "a half-staged batch stays hidden"

    batch = staged(inbox, 2)

    assert marker == f"staging/{batch}.json"
    assert inbox.batches() == [batch] and staging_markers(bucket) == []
    assert inbox.waiting() == 0 and len(list(inbox.read(batch))) == 2


def test_a_stale_half_staged_batch_is_completed(bucket, monkeypatch):
    inbox = make_inbox(bucket, stale_after_seconds=0)
    for n in range(2):
        upload(bucket, f"r{n}.json", b"{}")
    copies: list[str] = []

    def crash_after_one_copy(batch_id, key, source, received):
        if copies:
            raise RuntimeError("stager killed")
        copies.append(key)
        return GcsBatchStore.copy_in(inbox.store, batch_id, key, source, received)

    with monkeypatch.context() as patched:
        patched.setattr(inbox.store, "copy_in", crash_after_one_copy)
        with pytest.raises(RuntimeError):
            inbox.stage(max_items=2, max_age_seconds=0, now=now())
    assert inbox.batches() == []

    assert inbox.stage(max_items=2, max_age_seconds=0, now=now()) is None, "nothing else waits"

    [batch] = inbox.batches()
    assert sorted(i.key for i in inbox.read(batch)) == ["r0.json", "r1.json"]
    assert inbox.waiting() == 0 and staging_markers(bucket) == []


def test_inbox_prefix_must_be_apart_from_the_batch_store():
    store = GcsBatchStore(storage.Bucket(client=None, name="unused"))
    for prefix in ("inbox", "batches/", "batches/x/", ""):
        with pytest.raises(ConfigError, match="inbox_prefix"):
            GcsInbox(store, inbox_prefix=prefix)


# through the pipeline


def test_a_request_staged_twice_is_delivered_once(bucket, local, harness):
    inbox = make_inbox(bucket)
    original = upload(bucket, "r1.json", local.request(id="m1"))
    crashed = "20000101T000000-000000000000"
    # a stager copied the request into its batch and died before deleting the original
    assert inbox.store.copy_in(crashed, "r1.json", original, original.time_created)

    second = staged(inbox, 1)
    assert sorted(inbox.batches()) == sorted([crashed, second])

    first_run, second_run = harness.run(inbox, crashed), harness.run(inbox, second)

    assert (first_run.delivered, second_run.delivered) == (1, 0)
    assert len(harness.transport.sent) == 1
    assert second_run.duplicates == 0, "the same inbox item seen again is not a client duplicate"
    assert inbox.batches() == []

    upload(bucket, "r1-again.json", local.request(id="m1"))
    resent = staged(inbox, 1)
    assert harness.run(inbox, resent).duplicates == 1, "a client's second copy is a duplicate"
    assert len(harness.transport.sent) == 1


def test_processing_leaves_no_identity_token_in_the_bucket(bucket, local, harness):
    inbox = make_inbox(bucket)
    tokens = [local.token() for _ in range(4)]
    upload(bucket, "ok.json", local.request(id="ok", identity_token=tokens[0]))
    upload(bucket, "unknown.json", local.request(id="u", service="nope", identity_token=tokens[1]))
    upload(bucket, "binary.bin", b"\xff\xfe not json " + tokens[2].encode())
    upload(bucket, "again.json", local.request(id="ok", identity_token=tokens[3]))
    batch = staged(inbox, 4)

    summary = harness.run(inbox, batch)

    assert (summary.delivered, summary.duplicates) == (1, 1)
    assert dict(summary.rejected) == {"unknown_service": 1, "malformed": 1}
    stored = contents(bucket)
    assert sorted(stored) == sorted([f"done/{batch}/ok.json", f"done/{batch}/again.json",
                                     f"rejected/{batch}/unknown.json",
                                     f"rejected/{batch}/binary.bin"])
    for name, (body, meta) in stored.items():
        for token in tokens:
            assert token.encode() not in body and token not in json.dumps(meta), name
    assert json.loads(stored[f"done/{batch}/ok.json"][0])["identity_token"] == "<redacted>"
    assert stored[f"rejected/{batch}/unknown.json"][1][REASON].startswith("unknown_service: ")
    assert stored[f"rejected/{batch}/binary.bin"][1][REASON].startswith("malformed: ")
    assert inbox.batches() == []


def test_an_oversized_request_is_read_only_up_to_the_limit(bucket, local, harness):
    inbox = make_inbox(bucket)
    token = local.token()
    head = json.dumps({"identity_token": token, "text": ""}).encode()[:-2]
    upload(bucket, "huge.json", head + b"a" * (3 * MAX_BYTES) + b'"}')
    batch = staged(inbox, 1)

    tracemalloc.start()
    try:
        [item] = list(inbox.read(batch))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert len(item.body) == MAX_BYTES + 1
    assert peak < 1.5 * MAX_BYTES, f"read held {peak / 2**20:.1f} MiB of a 30 MiB object"
    summary = harness.run(inbox, batch)
    assert dict(summary.rejected) == {"too_large": 1}
    stored = contents(bucket)
    assert list(stored) == [f"rejected/{batch}/huge.json"]
    assert token.encode() not in stored[f"rejected/{batch}/huge.json"][0]


class TestEmulator:
    """What the inbox needs of fake-gcs-server, and a gap it has: fails loudly if either moves."""

    def test_listings_are_paged(self, bucket):
        for n in range(5):
            upload(bucket, f"p{n}", b"")
        pages = bucket.client.list_blobs(bucket, prefix="inbox/", page_size=2, timeout=10).pages
        assert [len(list(page)) for page in pages] == [2, 2, 1]

    def test_ranged_reads_are_honoured(self, bucket):
        blob = upload(bucket, "ranged", b"0123456789" * 10)
        head = blob.download_as_bytes(start=0, end=9, raw_download=True, timeout=10)
        assert head == b"0123456789"

    def test_delete_ignores_the_generation_asked_for(self, bucket):
        """Real GCS deletes only the named generation (404 if it is not live); the emulator
        deletes the live one. So the emulator cannot show that a request rewritten under the
        same name during staging survives; on GCS it does."""
        blob = upload(bucket, "rewritten", b"{}")
        bucket.blob(blob.name, generation=blob.generation + 1).delete(timeout=10)
        assert bucket.get_blob(blob.name, timeout=10) is None


# retention of kept copies


def passes(service_cutoff: datetime, default_cutoff: datetime) -> KeptRetention:
    return KeptRetention(cutoffs={"lookup-notices": service_cutoff},
                         default_cutoff=default_cutoff,
                         registered=frozenset({"lookup-notices", "hr-reminders"}))


def test_expire_kept_removes_done_and_rejected_copies_per_service(bucket, local, harness):
    inbox = make_inbox(bucket)
    upload(bucket, "ok.json", local.request(id="ok"))
    upload(bucket, "bad-recipient.json", local.request(id="r", to=["x@example.org\r\nBcc: y"]))
    upload(bucket, "other.json", local.request(id="h", service="hr-reminders"))
    upload(bucket, "binary.bin", b"\xff\xfe not json")
    batch = staged(inbox, 4)
    harness.run(inbox, batch)
    upload(bucket, "staged.json", local.request(id="s"))
    pending = staged(inbox, 1)
    upload(bucket, "waiting.json", local.request(id="w"))
    before = contents(bucket)
    assert before[f"done/{batch}/ok.json"][1][SERVICE] == "lookup-notices"
    assert before[f"rejected/{batch}/binary.bin"][1][SERVICE] == ""
    past, future = now() - timedelta(days=1), now() + timedelta(minutes=1)

    assert inbox.expire_kept(passes(past, past)).removed == 0, "nothing is that old yet"
    expired = inbox.expire_kept(passes(future, past))

    assert dict(expired.by_kind) == {"done": 1, "rejected": 1}
    assert (dict(expired.by_service), expired.unattributed) == ({"lookup-notices": 2}, 0)
    left = set(contents(bucket))
    assert f"done/{batch}/ok.json" not in left
    assert f"rejected/{batch}/bad-recipient.json" not in left
    assert {f"rejected/{batch}/other.json", f"rejected/{batch}/binary.bin"} <= left
    unknown = inbox.expire_kept(passes(future, future))
    assert (unknown.removed, unknown.unattributed) == (1, 1), "unattributed: the default"
    assert inbox.expire_kept(passes(future, future)).removed == 0, "a second pass: nothing"
    assert f"rejected/{batch}/other.json" in contents(bucket), "hr-reminders' own pass keeps it"
    assert inbox.waiting() == 1 and inbox.batches() == [pending]
    assert [item.key for item in inbox.read(pending)] == ["staged.json"]


def test_a_copy_kept_without_its_service_recorded_is_read_for_it(bucket):
    inbox = make_inbox(bucket)
    batch = "20261101T000000-0123456789ab"
    bucket.blob(f"done/{batch}/a.json").upload_from_string(
        json.dumps({"service": "lookup-notices", "id": "a"}), timeout=30)
    bucket.blob(f"done/{batch}/b.json").upload_from_string(
        json.dumps({"service": "hr-reminders", "id": "b"}), timeout=30)
    future = now() + timedelta(minutes=1)

    expired = inbox.expire_kept(passes(future, now() - timedelta(days=1)))

    assert (dict(expired.by_service), expired.examined) == ({"lookup-notices": 1}, 2)
    assert list(contents(bucket)) == [f"done/{batch}/b.json"]


def test_expire_kept_lists_only_batches_old_enough(bucket):
    """Batch ids start with their time: a batch newer than every cutoff is not even listed."""
    inbox = make_inbox(bucket)
    for batch in ("20260101T000000-aaaaaaaaaaaa", "20991231T000000-bbbbbbbbbbbb"):
        bucket.blob(f"rejected/{batch}/x.json").upload_from_string(
            json.dumps({"service": "lookup-notices"}), timeout=30)
    cutoff = datetime(2026, 6, 1, tzinfo=UTC)

    listed = [b.name for b in inbox.store._kept_before("rejected", now() + timedelta(minutes=1))]
    assert listed == ["rejected/20260101T000000-aaaaaaaaaaaa/x.json"]
    assert inbox.expire_kept(passes(cutoff, cutoff)).examined == 0, "kept after the cutoff"
