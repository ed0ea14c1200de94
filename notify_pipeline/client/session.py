"""`Session`: a service's handle on the notify inbox (DESIGN.md, "Service integrations")."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from notify_pipeline import deployment
from notify_pipeline.client.compose import Sender, encode
from notify_pipeline.client.errors import ConfigError, Unavailable
from notify_pipeline.client.inboxes import FileWriter, InboxWriter, object_name, open_inbox
from notify_pipeline.client.tokens import CachedToken, TokenSource, google_fetcher, local_fetcher
from notify_pipeline.registry import SERVICE_ID, RegistryError, load_registry

log = logging.getLogger(__name__)

_SERVICE_ID = re.compile(SERVICE_ID)


class Session(Sender):
    """Sends requests for one service to one inbox, with that service's identity.

    `inbox` is `file:///path`, `gs://bucket/prefix/` or `pubsub://projects/P/topics/T`.
    `audience` defaults to the deployment's (`NOTIFY_AUDIENCE`, else `https://$NOTIFY_DOMAIN`).
    With a `file://` inbox the local issuer mints the token, for `service_account` or else the
    service's first account in the registry (`$NOTIFY_REGISTRY`); its keys are under
    `$NOTIFY_HOME/keys`, or beside the inbox folder when that is named `inbox` and `NOTIFY_HOME`
    is not set. Otherwise the token comes from Application Default Credentials.

    Beyond the contract, `token_source` replaces how tokens are obtained, `timeout_seconds`
    bounds each write and `max_attempts` the tries of a transient failure (exponential backoff).
    A session is safe to share between threads.
    """

    def __init__(
        self,
        service: str,
        inbox: str,
        *,
        service_account: str | None = None,
        audience: str | None = None,
        token_source: TokenSource | None = None,
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        check_service(service)
        if max_attempts < 1:
            raise ConfigError("max_attempts", "must be at least 1")
        self.service = service
        self.audience = audience or deployment.env_audience()
        self._writer: InboxWriter = open_inbox(inbox, timeout_seconds=timeout_seconds)
        self._tokens = token_source or self._default_tokens(service_account)
        self._retrying = Retrying(
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            retry=retry_if_exception_type(Unavailable),
            reraise=True,
        )

    def __repr__(self) -> str:
        return f"Session(service={self.service!r}, inbox={self.inbox!r})"

    @property
    def inbox(self) -> str:
        return self._writer.url

    def send_wire(self, wire: Mapping[str, Any]) -> str:
        """Sign and write a request built by `compose.build`; returns where it went."""
        name = object_name(self.service, str(wire["id"]))  # one name for every attempt
        where: str = self._retrying.copy()(self._attempt, wire, name)  # a copy: thread-safe
        log.info("request %s of %s queued at %s", wire["id"], self.service, where)
        return where

    def _attempt(self, wire: Mapping[str, Any], name: str) -> str:
        """One try. A GCS upload that timed out but landed makes the next try's create-only
        upload fail its precondition, which the writer takes as done."""
        return self._writer.write(encode(wire, self._tokens.token()), name=name)

    def _default_tokens(self, service_account: str | None) -> TokenSource:
        if not isinstance(self._writer, FileWriter):
            return CachedToken(google_fetcher(audience=self.audience,
                                              service_account=service_account))
        home = _local_home(self._writer.folder)
        account = service_account or _registered_account(self.service)
        return CachedToken(local_fetcher(
            keys_dir=home / "keys", issuer=deployment.env_local_issuer(),
            service_account=account, audience=self.audience,
        ))


def check_service(service: object) -> None:
    if not (isinstance(service, str) and len(service) <= 63 and _SERVICE_ID.fullmatch(service)):
        raise ConfigError("service", f"{service!r} is not a service id (lower-case letters, "
                          "digits and '-', as in the registry)")


def _local_home(inbox_folder: Path) -> Path:
    """`$NOTIFY_HOME`, or the folder holding an `inbox` folder when the variable is unset."""
    if deployment.env_value("NOTIFY_HOME") or inbox_folder.name != "inbox":
        return deployment.env_home()
    return inbox_folder.parent


def _registered_account(service: str) -> str:
    """The service's first service account in the local registry, as `notify enqueue` picks."""

    directory = deployment.env_registry()
    try:
        registered = load_registry(directory).get(service)
    except (RegistryError, OSError) as exc:
        raise ConfigError("service_account", f"none given, and the registry at {directory} "
                          f"could not be read to find one: {exc}") from None
    if registered is None:
        raise ConfigError("service_account", f"none given, and {service!r} is not registered "
                          f"in {directory}")
    return registered.service_accounts[0]
