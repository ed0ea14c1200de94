"""Identity tokens for send requests, fetched once and reused until shortly before they expire.

Production: a Google-signed OIDC ID token for the deployment's audience, from Application
Default Credentials (a service account key, or the metadata server on Cloud Run). When the
credentials are a person's (`gcloud auth application-default login`) and a service account is
named, the token is that account's, by impersonation (the person needs the Service Account
Token Creator role on it). Locally (`file://` inboxes): minted by the local issuer under
`$NOTIFY_HOME/keys/`, as the pipeline's local profile expects. Tokens are secrets: they never
appear in reprs, logs or exception messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from notify_pipeline.client.errors import ConfigError, IdentityUnavailable

Fetcher = Callable[[], str]
"""Returns a fresh ID token (a JWT with an `exp` claim)."""

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
REFRESH_MARGIN_SECONDS = 300.0  # well above the pipeline's clock skew allowance


class TokenSource(Protocol):
    def token(self) -> str:
        """A token valid for a while yet; raises `IdentityUnavailable` or `ConfigError`."""
        ...


class CachedToken:
    """Reuses the token `fetch` returns until `refresh_margin_seconds` before its `exp`."""

    def __init__(
        self,
        fetch: Fetcher,
        *,
        refresh_margin_seconds: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        state = "empty" if self._token is None else f"refresh_at={self._refresh_at:.0f}"
        return f"CachedToken({state})"

    def token(self) -> str:
        with self._lock:  # one fetch at a time, not one per waiting thread
            if self._token is None or self._clock() >= self._refresh_at:
                token = self._fetch()
                self._refresh_at = token_expiry(token) - self._margin
                self._token = token
            return self._token


def token_expiry(token: str) -> float:
    """The `exp` claim, read without verifying (the pipeline verifies; we only schedule)."""
    from google.auth import jwt

    try:
        exp = jwt.decode(token, verify=False).get("exp")
    except (ValueError, TypeError):
        exp = None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityUnavailable("the identity token obtained carries no valid exp claim")
    return float(exp)


def local_fetcher(
    *, keys_dir: Path, issuer: str, service_account: str, audience: str, ttl_seconds: int = 3600
) -> Fetcher:
    """Mint with the local issuer whose key lives under `keys_dir` (created on first use)."""
    from notify_pipeline.local_issuer import LocalIssuer

    local = LocalIssuer(keys_dir, issuer)

    def fetch() -> str:
        return local.mint(service_account=service_account, audience=audience,
                          ttl_seconds=ttl_seconds)

    return fetch


def google_fetcher(*, audience: str, service_account: str | None = None) -> Fetcher:
    """Fetch from Application Default Credentials, impersonating `service_account` when the
    credentials are a person's."""

    def fetch() -> str:
        import google.auth
        from google.auth import exceptions
        from google.auth.transport.requests import Request
        from google.oauth2 import credentials as user_credentials
        from google.oauth2 import id_token

        try:
            if service_account is not None:
                source, _project = google.auth.default(scopes=[CLOUD_PLATFORM])
                if isinstance(source, user_credentials.Credentials):
                    return _impersonate(source, service_account, audience, Request())
            token: str = id_token.fetch_id_token(Request(), audience)
        except exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                "GOOGLE_APPLICATION_CREDENTIALS",
                "no Application Default Credentials that can sign ID tokens: run on Google "
                "Cloud, point the variable at a service account key, or log in with gcloud and "
                f"name service_account to impersonate ({type(exc).__name__})",
            ) from None
        except (exceptions.TransportError, exceptions.RefreshError) as exc:
            raise IdentityUnavailable(
                f"could not obtain an ID token for {audience}: {type(exc).__name__}"
            ) from None
        return token

    return fetch


def _impersonate(source: object, service_account: str, audience: str, request: object) -> str:
    from google.auth import impersonated_credentials

    target = impersonated_credentials.Credentials(
        source_credentials=source, target_principal=service_account,
        target_scopes=[CLOUD_PLATFORM], lifetime=3600,
    )
    id_credentials = impersonated_credentials.IDTokenCredentials(
        target, target_audience=audience, include_email=True
    )
    id_credentials.refresh(request)
    return str(id_credentials.token)


class StaticToken:
    """A token obtained elsewhere (e.g. `notify enqueue --token`), used as it is."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    def token(self) -> str:
        return self._token
