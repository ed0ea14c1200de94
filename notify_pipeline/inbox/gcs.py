"""The GCS inbox: clients write one request per object under `gs://BUCKET/inbox/`.

Staging copies the chosen objects server-side into a batch (see `gcs_store`), keeping each
request's receive time (its original `timeCreated`) in metadata, then deletes the originals. No
listing cursor is kept: staged objects are gone, so whatever the prefix still lists is new.

Exactly-once is the delivery ledger's job, not the bucket's: generation preconditions are not
relied on (the emulators ignore them). A stager that dies half-way leaves its batch hidden behind
a staging marker, and a later `stage` either re-stages the same objects under the same batch id
or, once the marker is stale, completes the batch. A request can still be staged twice (the dead
stager's objects picked up with newer ones into another batch; two stagers racing): the ledger's
claim on (`service`, `id`) lets only one copy be sent. The copies share an inbox key, so the
ledger treats the later one as a re-run of the same item (`ClaimStatus.DONE`: cleaned up, not
counted as a client's `duplicate`).

Copies and deletes name the listed generation, so a request rewritten under the same name while
it was being staged is left for the next batch (on real GCS; the emulators delete whatever
generation is live).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from google.cloud import storage

from notify_pipeline.defaults import GCS_INBOX_PREFIX
from notify_pipeline.errors import ConfigError
from notify_pipeline.inbox.gcs_store import (
    GcsBatchStore,
    GcsStagedInbox,
    bound_met,
    make_batch_id,
)


class GcsInbox(GcsStagedInbox):
    """Requests under `inbox_prefix` in the store's bucket.

    A stage lists at most `scan_limit` waiting objects (`page_size` per request), in name order,
    and picks the oldest of those by `timeCreated`. Staged objects are deleted, so a backlog
    larger than the scan drains in name order: clients that start names with a timestamp get
    oldest-first service overall.
    """

    def __init__(
        self,
        store: GcsBatchStore,
        *,
        inbox_prefix: str = GCS_INBOX_PREFIX,
        scan_limit: int = 5000,
        page_size: int = 1000,
    ) -> None:
        areas = store.areas()
        overlaps = [a for a in areas if a.startswith(inbox_prefix) or inbox_prefix.startswith(a)]
        if not inbox_prefix.endswith("/") or overlaps:
            raise ConfigError(
                "inbox_prefix", f"{inbox_prefix!r} must end with '/' and be apart from "
                f"the batch store's prefixes {areas}"
            )
        super().__init__(store)
        self.inbox_prefix = inbox_prefix
        self.scan_limit, self.page_size = scan_limit, page_size

    def stage(self, *, max_items: int, max_age_seconds: float, now: datetime) -> str | None:
        self._complete_stale(now)
        waiting = self._scan(max(self.scan_limit, max_items))
        if not waiting or not bound_met(
            count=len(waiting), oldest=waiting[0].time_created, max_items=max_items,
            max_age_seconds=max_age_seconds, now=now,
        ):
            return None
        sources = [_source(blob) for blob in waiting[:max_items]]
        batch_id = make_batch_id(
            waiting[0].time_created, (f"{s['name']}#{s['generation']}" for s in sources)
        )
        self.store.begin(batch_id, sources)
        self._transfer(batch_id, sources)
        self.store.seal(batch_id)
        return batch_id

    def _complete_stale(self, now: datetime) -> None:
        for batch_id, sources in self.store.stale(now).items():
            self._transfer(batch_id, sources)
            self.store.seal(batch_id)

    def _transfer(self, batch_id: str, sources: Sequence[Mapping[str, str]]) -> None:
        """Copy each source into the batch, then delete it; sources already gone are skipped."""
        for source in sources:
            original = self.store.bucket.blob(source["name"], generation=int(source["generation"]))
            key = source["name"].removeprefix(self.inbox_prefix)
            received = datetime.fromisoformat(source["received_at"])
            if self.store.copy_in(batch_id, key, original, received):
                self.store.delete(original)

    def _scan(self, limit: int) -> list[storage.Blob]:
        """Waiting requests, oldest first; folder placeholders (names ending in '/') skipped."""
        listing = self.store.bucket.client.list_blobs(
            self.store.bucket, prefix=self.inbox_prefix, max_results=limit,
            page_size=min(self.page_size, limit), **self.store.limits.kwargs(),
        )
        found = [blob for blob in listing if not blob.name.endswith("/")]
        found.sort(key=lambda blob: (blob.time_created, blob.name))
        return found

    def waiting(self) -> int:
        """Waiting requests, counted up to `scan_limit`."""
        return len(self._scan(self.scan_limit))


def _source(blob: storage.Blob) -> dict[str, str]:
    """What staging needs of a waiting object, in the form its staging marker keeps."""
    return {
        "name": blob.name,
        "generation": str(blob.generation),
        "received_at": blob.time_created.isoformat(),
    }
