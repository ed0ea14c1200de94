"""Staged batches kept as objects in a GCS bucket: the durable half shared by the GCS and Pub/Sub
inboxes.

Layout under `root` in the bucket:

- `staging/<batch id>.json`: a batch being staged and what goes into it; removed ("sealed") once
  every item is in place. `batches()` hides such a batch, as `LocalInbox` hides its `.staging-`
  folders, so a run never starts on a half-staged batch; otherwise a stager finishing a batch
  that a run had already emptied would bring back a batch id whose run key is spent.
- `batches/<batch id>/<key>`: the staged items, each with its receive time in object metadata
  (a copy's own `timeCreated` is the copy's, not the request's).
- `done/<batch id>/<key>` and `rejected/<batch id>/<key>`: finished and quarantined items with
  their identity token redacted (tokens are secrets and must not outlive processing); a
  quarantined item carries its reject reason in metadata, and each the service it names (empty
  when none), so retention (`expire_kept`) need not read it. Batch ids start with their time,
  so a retention pass lists only the batches old enough to hold an expired copy.

Every write here is idempotent (a deterministic name, the same bytes), so uploads and copies are
retried although they carry no generation precondition: the emulators ignore preconditions, and
exactly-once delivery is the ledger's job, not the bucket's.

Buckets with object versioning or soft delete keep deleted objects, tokens included, for the
retention period: run the inbox on a bucket with both off (or accept tokens kept until expiry).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from notify_pipeline.defaults import MAX_REQUEST_BYTES
from notify_pipeline.inbox.base import Inbox, InboxItem
from notify_pipeline.inbox.retention import ExpiredCopies, KeptRetention, service_of
from notify_pipeline.request import redact_token

RECEIVED_AT = "notify-received-at"
REASON = "notify-reject-reason"
SERVICE = "notify-service"
KEPT = ("done", "rejected")
MAX_REASON_CHARS = 1024  # custom metadata is capped at 8 KiB per object
MAX_REWRITE_CALLS = 32  # a same-bucket rewrite finishes in one call; cross-class ones may not
JSON = "application/json"
BYTES = "application/octet-stream"  # a staged request is kept byte for byte, JSON or not


def storage_client(*, project: str, emulator_host: str | None = None) -> storage.Client:
    """A client for Google Cloud Storage, or for an emulator at `emulator_host` (a URL)."""
    if emulator_host is None:
        return storage.Client(project=project)
    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator_host},
    )


@dataclass(frozen=True)
class CallLimits:
    """Each request's timeout, and the total time its bounded, backed-off retries may take."""

    timeout_seconds: float = 30.0
    retry_seconds: float = 60.0

    def kwargs(self) -> dict[str, Any]:
        retry = DEFAULT_RETRY.with_timeout(self.retry_seconds)
        return {"timeout": self.timeout_seconds, "retry": retry}


def make_batch_id(oldest: datetime, parts: Iterable[str]) -> str:
    """Deterministic from the staged items: the oldest's receive time plus a digest of them all.

    The time comes first, so sorting ids lists batches oldest first.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\x1e")
    return f"{oldest.astimezone(UTC):%Y%m%dT%H%M%S}-{digest.hexdigest()[:12]}"


def bound_met(
    *, count: int, oldest: datetime, max_items: int, max_age_seconds: float, now: datetime
) -> bool:
    """`LocalInbox.stage`'s rule: stage once `max_items` wait or the oldest waited long enough."""
    return count >= max_items or (now - oldest).total_seconds() >= max_age_seconds


def received_at(blob: storage.Blob) -> datetime:
    """The receive time kept in metadata by staging; the object's own creation time otherwise."""
    stamp = (blob.metadata or {}).get(RECEIVED_AT)
    when: datetime = datetime.fromisoformat(stamp) if stamp else blob.time_created
    return when


class GcsBatchStore:
    """Staged batches under `root` in one bucket (see the module docstring for the layout)."""

    def __init__(
        self,
        bucket: storage.Bucket,
        *,
        root: str = "",
        max_item_bytes: int = MAX_REQUEST_BYTES,
        stale_after_seconds: float = 300.0,
        list_limit: int = 10_000,
        limits: CallLimits | None = None,
    ) -> None:
        self.bucket, self.root = bucket, root
        self.max_item_bytes, self.list_limit = max_item_bytes, list_limit
        self.stale_after_seconds = stale_after_seconds
        self.limits = limits or CallLimits()

    # staging

    def begin(self, batch_id: str, sources: Sequence[Mapping[str, str]]) -> None:
        """Record that `batch_id` is being staged from `sources` (kept for completing it later)."""
        body = json.dumps({"sources": list(sources)}).encode()
        self._upload(self._marker(batch_id), body, {})

    def seal(self, batch_id: str) -> None:
        """Make a staged batch visible to `batches()`."""
        self.delete(self.bucket.blob(self._marker(batch_id)))

    def delete(self, blob: storage.Blob) -> None:
        """Delete an object (at the blob's generation, if it names one); gone counts as deleted."""
        try:
            blob.delete(**self.limits.kwargs())
        except NotFound:
            return

    def stale(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """Batches whose stager died half-way (marked for longer than `stale_after_seconds`).

        A younger marker may belong to a stager still at work, so it is left alone.
        """
        found: dict[str, list[dict[str, str]]] = {}
        for blob in self._list(self._prefix("staging/")):
            if (now - blob.time_created).total_seconds() < self.stale_after_seconds:
                continue
            body = self._download(blob)
            if body is not None:
                batch_id = blob.name.removeprefix(self._prefix("staging/")).removesuffix(".json")
                found[batch_id] = json.loads(body)["sources"]
        return found

    def put(self, batch_id: str, key: str, body: bytes, received: datetime) -> None:
        """Write one item into a batch."""
        meta = {RECEIVED_AT: received.isoformat()}
        self._upload(self._item(batch_id, key), body, meta, content_type=BYTES)

    def copy_in(self, batch_id: str, key: str, source: storage.Blob, received: datetime) -> bool:
        """Copy `source` (at its generation) into a batch server-side; False if it is gone."""
        target = self.bucket.blob(self._item(batch_id, key))
        target.metadata = {RECEIVED_AT: received.isoformat()}
        token: str | None = None
        try:
            for _ in range(MAX_REWRITE_CALLS):
                token, _done, _total = target.rewrite(source, token=token, **self.limits.kwargs())
                if token is None:
                    return True
        except NotFound:
            return False
        raise TimeoutError(f"copying {source.name} did not finish in {MAX_REWRITE_CALLS} calls")

    # batches

    def batches(self) -> list[str]:
        """Sealed batches that still hold items, oldest first."""
        root = self._prefix("batches/")
        listing = self.bucket.client.list_blobs(
            self.bucket, prefix=root, delimiter="/", max_results=self.list_limit,
            **self.limits.kwargs(),
        )
        list(listing)  # prefixes are gathered while the pages are read
        ids = {prefix[len(root):-1] for prefix in listing.prefixes}
        return sorted(ids - self._pending_ids())

    def read(self, batch_id: str) -> Iterator[InboxItem]:
        """The batch's items; bodies over `max_item_bytes` are cut to `max_item_bytes + 1`."""
        prefix = self._item(batch_id, "")
        for blob in self._list(prefix):
            body = self._download(blob)
            if body is not None:
                yield InboxItem(blob.name[len(prefix):], body, received_at(blob))

    def finish(self, batch_id: str, keys: Sequence[str]) -> None:
        """Move finished items to `done/`, token redacted; items already gone are skipped."""
        present = {blob.name: blob for blob in self._list(self._item(batch_id, ""))}
        for key in keys:
            blob = present.get(self._item(batch_id, key))
            if blob is not None:
                self._move_to_done(batch_id, key, blob)

    def quarantine(self, batch_id: str, key: str, body: bytes, note: str) -> None:
        """Keep a rejected item, token redacted, with its reason; then drop it from the batch."""
        meta = {REASON: note[:MAX_REASON_CHARS], SERVICE: service_of(body) or ""}
        self._upload(self._prefix(f"rejected/{batch_id}/{key}"), redact_token(body), meta)
        self.delete(self.bucket.blob(self._item(batch_id, key)))

    def _move_to_done(self, batch_id: str, key: str, blob: storage.Blob) -> None:
        body = self._download(blob)
        if body is None:
            return
        meta = {RECEIVED_AT: received_at(blob).isoformat(), SERVICE: service_of(body) or ""}
        self._upload(self._prefix(f"done/{batch_id}/{key}"), redact_token(body), meta)
        self.delete(blob)

    # retention

    def expire_kept(self, retention: KeptRetention) -> ExpiredCopies:
        """Delete expired `done/` and `rejected/` copies, aged by their `timeCreated` (when they
        were kept). Each is deleted at its listed generation."""
        tally = ExpiredCopies()
        latest = retention.latest_cutoff
        for kind in KEPT:
            for blob in self._kept_before(kind, latest):
                tally.examined += 1
                service = self._kept_service(blob)
                cutoff = retention.cutoff_for(service)
                if cutoff is None or blob.time_created >= cutoff:
                    continue
                self.delete(blob)
                tally.count(kind, retention.attributed(service))
        return tally

    def _kept_before(self, kind: str, cutoff: datetime) -> Iterator[storage.Blob]:
        """Copies under `kind/` kept before `cutoff`, every page. A batch's id starts with its
        oldest item's receive time, which no copy of it predates, so the listing ends at the
        first batch id after the cutoff's second."""
        prefix = self._prefix(f"{kind}/")
        end = prefix + f"{cutoff.astimezone(UTC) + timedelta(seconds=1):%Y%m%dT%H%M%S}"
        listing: Iterator[storage.Blob] = self.bucket.client.list_blobs(
            self.bucket, prefix=prefix, end_offset=end, **self.limits.kwargs())
        return (blob for blob in listing if blob.time_created < cutoff)

    def _kept_service(self, blob: storage.Blob) -> str | None:
        """The service a kept copy names: from its metadata, or (a copy kept before that was
        recorded) from its body."""
        meta = blob.metadata or {}
        if SERVICE in meta:
            return meta[SERVICE] or None
        body = self._download(blob)
        return service_of(body) if body is not None else None

    # plumbing

    def areas(self) -> tuple[str, ...]:
        """The prefixes this store writes under, so an inbox prefix can be kept clear of them."""
        return tuple(self._prefix(area) for area in ("staging/", "batches/", "done/", "rejected/"))

    def _prefix(self, name: str) -> str:
        return f"{self.root}{name}"

    def _item(self, batch_id: str, key: str) -> str:
        return self._prefix(f"batches/{batch_id}/{key}")

    def _marker(self, batch_id: str) -> str:
        return self._prefix(f"staging/{batch_id}.json")

    def _pending_ids(self) -> set[str]:
        root = self._prefix("staging/")
        return {b.name[len(root):].removesuffix(".json") for b in self._list(root)}

    def _list(self, prefix: str) -> Iterator[storage.Blob]:
        blobs: Iterator[storage.Blob] = self.bucket.client.list_blobs(
            self.bucket, prefix=prefix, max_results=self.list_limit, **self.limits.kwargs()
        )
        return blobs

    def _download(self, blob: storage.Blob) -> bytes | None:
        """At most `max_item_bytes + 1` bytes, so an oversized item costs no more memory.

        Stored bytes are read as they are (`raw_download`): no decompressive transcoding, which
        would let a small gzip object expand without bound. None if the object is gone.
        """
        limit = self.max_item_bytes + 1
        ranged = (blob.size or 0) >= limit
        try:
            data: bytes = blob.download_as_bytes(
                start=0 if ranged else None, end=limit - 1 if ranged else None,
                raw_download=True, **self.limits.kwargs(),
            )
        except NotFound:
            return None
        return data[:limit]  # a server that ignores the range still hands on no more

    def _upload(
        self, name: str, data: bytes, metadata: Mapping[str, str], content_type: str = JSON
    ) -> None:
        blob = self.bucket.blob(name)
        blob.metadata = dict(metadata) or None
        blob.upload_from_string(data, content_type=content_type, **self.limits.kwargs())


class GcsStagedInbox(Inbox):
    """An inbox whose staged batches live in a `GcsBatchStore`: everything after staging is the
    store's. Subclasses say how requests arrive (`stage`, `waiting`)."""

    def __init__(self, store: GcsBatchStore) -> None:
        self.store = store

    def batches(self) -> list[str]:
        return self.store.batches()

    def read(self, batch_id: str) -> Iterator[InboxItem]:
        return self.store.read(batch_id)

    def finish(self, batch_id: str, keys: Sequence[str]) -> None:
        self.store.finish(batch_id, keys)

    def quarantine(self, batch_id: str, key: str, body: bytes, note: str) -> None:
        self.store.quarantine(batch_id, key, body, note)

    def expire_kept(self, retention: KeptRetention) -> ExpiredCopies:
        return self.store.expire_kept(retention)
