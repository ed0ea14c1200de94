"""Putting the analytics' own send requests on the inbox, the way any service does.

The writer is the inbox's (a local folder, a GCS prefix); the token source signs as the
`notify-alerts` service's account (the local issuer, or Application Default Credentials).
File and object names are the request ids, so a request written twice waits once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from notify_pipeline.inbox.local import LocalInbox


class RequestWriter(Protocol):
    def write(self, name: str, body: bytes) -> None: ...


class LocalInboxWriter:
    def __init__(self, home: Path) -> None:
        self._inbox = LocalInbox(home)

    def write(self, name: str, body: bytes) -> None:
        self._inbox.write_request(body, name)


class GcsInboxWriter:
    """Objects under the inbox prefix of a GCS bucket (`bucket` is a google.cloud.storage one)."""

    def __init__(self, bucket: Any, prefix: str) -> None:
        self._bucket = bucket
        self._prefix = prefix

    def write(self, name: str, body: bytes) -> None:
        self._bucket.blob(self._prefix + name).upload_from_string(
            body, content_type="application/json")


def submit_requests(requests: Sequence[dict[str, Any]], writer: RequestWriter,
                    token: Callable[[], str]) -> list[str]:
    """Write each request with a fresh identity token; returns their ids."""
    if not requests:
        return []
    identity = token()
    for request in requests:
        body = json.dumps({**request, "identity_token": identity}).encode()
        writer.write(f"{request['service']}--{request['id']}.json", body)
    return [str(r["id"]) for r in requests]


def google_id_token(audience: str) -> str:
    """An ID token for `audience` from Application Default Credentials (gcp profile)."""
    import google.auth.transport.requests
    import google.oauth2.id_token

    token: str = google.oauth2.id_token.fetch_id_token(
        google.auth.transport.requests.Request(), audience)
    return token
