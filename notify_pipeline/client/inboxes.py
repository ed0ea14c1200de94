"""Inbox writers: where a finished request goes, named by a URL.

- `file:///path/to/inbox`: one file, written under a hidden name and linked into place
  (create-only).
- `gs://bucket/prefix/`: one object, uploaded create-only (`if_generation_match=0`).
- `pubsub://projects/P/topics/T`: one message, its publish awaited with a timeout.

Each writer makes one attempt and sorts failures into `InboxUnavailable` (worth retrying) and
`ConfigError` (fix the setting); the session retries. The cloud client libraries are imported
only by the writers that need them.
"""

from __future__ import annotations

import errno
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import unquote, urlsplit

from notify_pipeline import files
from notify_pipeline.client.errors import ConfigError, InboxUnavailable

# Errors of a local folder that may clear by themselves; anything else is a setup fault.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.EIO,
                               errno.ESTALE, errno.ETIMEDOUT, errno.EBUSY})


class InboxWriter(Protocol):
    url: str

    def write(self, body: bytes, *, name: str) -> str:
        """Put one request on the inbox under `name` (see `object_name`; the same for every
        attempt of one send); returns where it went (a path or a URL)."""
        ...


def open_inbox(url: str, *, timeout_seconds: float = 30.0) -> InboxWriter:
    """The writer for an inbox URL; `ConfigError("inbox")` when the URL is not one of ours."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return FileWriter(Path(unquote(parts.path)))
    if parts.scheme == "gs" and parts.netloc:
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            raise ConfigError("inbox", f"{url!r}: a gs:// inbox prefix must end with '/'")
        return GcsWriter(parts.netloc, prefix, timeout_seconds=timeout_seconds)
    if parts.scheme == "pubsub":
        topic = f"{parts.netloc}{parts.path}"
        segments = topic.split("/")
        if len(segments) == 4 and segments[0] == "projects" and segments[2] == "topics" and all(
            segments
        ):
            return PubSubWriter(topic, timeout_seconds=timeout_seconds)
    raise ConfigError(
        "inbox", f"{url!r} is not an inbox URL: use file:///path, gs://bucket/prefix/ or "
        "pubsub://projects/PROJECT/topics/TOPIC"
    )


def object_name(service: str, request_id: str, now: datetime | None = None) -> str:
    """`<UTC time>-<service>--<id>.json`: time first, so a listing in name order is oldest first.

    A new name per send, even for a repeated id: writing over a waiting request would let a
    later copy replace the first. Copies reach the pipeline in the order they were sent; it
    delivers the first and counts the rest as duplicates.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{service}--{request_id}.json"


class FileWriter:
    """The local profile's inbox folder (`$NOTIFY_HOME/inbox`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = folder.as_uri() if folder.is_absolute() else f"file://{folder}"

    def write(self, body: bytes, *, name: str) -> str:
        """Create-only, like the GCS writer: a file already there is an earlier attempt's."""
        path = self.folder / name
        try:
            files.create_once(path, body, mode=files.SHARED)
        except OSError as exc:
            if exc.errno in _TRANSIENT_ERRNOS:
                raise InboxUnavailable(self.url, exc.strerror or type(exc).__name__) from None
            raise ConfigError("inbox", f"cannot write to {self.folder}: {exc.strerror}") from None
        return str(path)


class GcsWriter:
    """A prefix of a GCS bucket. `STORAGE_EMULATOR_HOST` points the library at an emulator."""

    def __init__(self, bucket: str, prefix: str, *, timeout_seconds: float) -> None:
        from google.cloud import storage

        self.url = f"gs://{bucket}/{prefix}"
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        try:
            self._bucket = storage.Client(project=_PROJECT_UNUSED).bucket(bucket)
        except Exception as exc:
            _raise_sorted(self.url, exc)

    def write(self, body: bytes, *, name: str) -> str:
        from google.api_core.exceptions import PreconditionFailed

        name = f"{self.prefix}{name}"
        blob = self._bucket.blob(name)
        try:
            blob.upload_from_string(body, content_type="application/json",
                                    if_generation_match=0, timeout=self.timeout_seconds,
                                    retry=None)
        except PreconditionFailed:
            pass  # already there: an earlier attempt of this send got through
        except Exception as exc:
            _raise_sorted(self.url, exc)
        return f"gs://{self._bucket.name}/{name}"


# Uploads need no project; naming one stops the library from asking ADC for a default.
_PROJECT_UNUSED = "notify-client"


class PubSubWriter:
    """A Pub/Sub topic. `PUBSUB_EMULATOR_HOST` points the library at an emulator."""

    def __init__(self, topic: str, *, timeout_seconds: float) -> None:
        from google.cloud.pubsub_v1 import PublisherClient

        self.url = f"pubsub://{topic}"
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        try:
            self._publisher = PublisherClient()
        except Exception as exc:
            _raise_sorted(self.url, exc)

    def write(self, body: bytes, *, name: str) -> str:
        try:
            future = self._publisher.publish(self.topic, body, name=name)
            message_id = future.result(timeout=self.timeout_seconds)
        except FutureTimeout:
            raise InboxUnavailable(self.url, "publish not confirmed in time") from None
        except Exception as exc:
            _raise_sorted(self.url, exc)
        return f"{self.url}#{message_id}"


def _raise_sorted(url: str, exc: Exception) -> NoReturn:
    error = _google_error(url, exc)
    if error is exc:
        raise exc
    raise error from None


def _google_error(url: str, exc: Exception) -> Exception:
    """Sort a Google client error: retry what may pass, name the setting for what will not.
    Anything else is not ours to judge and is raised as it is."""
    import requests
    from google.api_core import exceptions as google
    from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError

    if isinstance(exc, google.NotFound | google.Forbidden | google.Unauthorized
                  | google.BadRequest):
        return ConfigError("inbox", f"{url} refused the request ({type(exc).__name__}): check "
                           "that it exists and that the caller may write to it")
    if isinstance(exc, DefaultCredentialsError | RefreshError):
        return ConfigError("GOOGLE_APPLICATION_CREDENTIALS", f"no usable Google credentials "
                           f"for {url} ({type(exc).__name__})")
    if isinstance(exc, google.ServerError | google.TooManyRequests | google.Aborted
                  | google.RetryError | TransportError | requests.ConnectionError
                  | requests.Timeout | ConnectionError | TimeoutError):
        return InboxUnavailable(url, type(exc).__name__)
    return exc
