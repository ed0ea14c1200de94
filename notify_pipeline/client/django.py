"""A Django email backend that sends through the notify client.

    EMAIL_BACKEND = "notify_pipeline.client.django.EmailBackend"
    NOTIFY_SERVICE = "lookup-notices"
    NOTIFY_INBOX = "pubsub://projects/P/topics/notify-inbox"
    NOTIFY_SERVICE_ACCOUNT = "..."     # optional (see `Session`)
    NOTIFY_AUDIENCE = "..."            # optional
    NOTIFY_FROM_EMAIL = "lookup@notify.example.org"  # optional: the service's own address
    NOTIFY_FROM_DOMAINS = ["mail.lookup.example.com"]  # optional: its custom domains

Django 6.1's `MAILERS` passes the same as keyword OPTIONS (`service`, `inbox`,
`service_account`, `audience`, `from_email`, `from_domains`, `fail_silently`), which take
precedence over the settings. The From address is the registry's: a message's `from_email` must
be `DEFAULT_FROM_EMAIL` (Django's "not set") or `NOTIFY_FROM_EMAIL`, optionally plus-addressed
(`lookup+tag@...` becomes the request's `from_tag`), or its local part at one of
`NOTIFY_FROM_DOMAINS` (the request's `from_domain`; the pipeline sends from it only once the
registry lists it for the service and its DNS records verify). `X-Notify-Idempotency-Key` (an extra
header, not passed on) becomes the request id; a `notify_tags` dict on the message becomes its
tags. Sessions are kept per configuration, so a `get_connection()` per message reuses the
cached identity token.
"""

from __future__ import annotations

import logging
import mimetypes
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.mime.base import MIMEBase
from email.utils import parseaddr
from typing import Any, Protocol

from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend

from notify_pipeline.client.compose import build
from notify_pipeline.client.errors import ClientError, ConfigError, InvalidRequest
from notify_pipeline.client.mock import MockSession
from notify_pipeline.client.session import Session
from notify_pipeline.errors import RejectReason

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "X-Notify-Idempotency-Key"
BACKEND = "notify_pipeline.client.django.EmailBackend"
_OPTIONS = {"service": "NOTIFY_SERVICE", "inbox": "NOTIFY_INBOX",
            "service_account": "NOTIFY_SERVICE_ACCOUNT", "audience": "NOTIFY_AUDIENCE",
            "from_email": "NOTIFY_FROM_EMAIL", "from_domains": "NOTIFY_FROM_DOMAINS"}
_REQUIRED = ("service", "inbox")


class BackendMisconfigured(ImproperlyConfigured):  # type: ignore[misc]
    """A setting (or MAILERS option) is missing or wrong; `setting` names it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class _Sender(Protocol):
    def send_wire(self, wire: Mapping[str, Any]) -> str: ...


_sessions: dict[tuple[str | None, ...], Session] = {}
_sessions_lock = threading.Lock()
_substitutes: list[_Sender] = []


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    def __init__(
        self,
        *,
        service: str | None = None,
        inbox: str | None = None,
        service_account: str | None = None,
        audience: str | None = None,
        from_email: str | None = None,
        from_domains: Sequence[str] | None = None,
        fail_silently: bool = False,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if hasattr(mail, "mailers"):  # Django 6.1+: the base class takes `alias` and refuses
            super().__init__(**kwargs)  # unknown OPTIONS itself
        else:  # older Django: do both here, as 6.1 would
            alias = kwargs.pop("alias", None)
            if kwargs:
                raise BackendMisconfigured(
                    "OPTIONS", f"unknown option(s) {sorted(kwargs)} for the notify email "
                    f"backend; it takes {sorted(_OPTIONS)} and fail_silently"
                )
            super().__init__()
            self.alias = alias
        if username is not None or password is not None:
            raise BackendMisconfigured(
                "auth_user", "the notify backend authenticates with the service's identity "
                "token, not a username and password"
            )
        self.fail_silently = fail_silently
        given = {"service": service, "inbox": inbox, "service_account": service_account,
                 "audience": audience, "from_email": from_email}
        self.options = {k: v if v is not None else getattr(settings, _OPTIONS[k], None)
                        for k, v in given.items()}
        for key in _REQUIRED:
            if not self.options[key]:
                raise BackendMisconfigured(_OPTIONS[key], f"must be set to use {BACKEND}")
        self.from_domains = _domains(
            from_domains if from_domains is not None
            else getattr(settings, _OPTIONS["from_domains"], None) or ()
        )

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Queue each message as a send request; returns how many were queued."""
        sent = 0
        for message in email_messages:
            try:
                self._session().send_wire(
                    to_wire(message, self.options, from_domains=self.from_domains))
            except (ClientError, ConfigError) as exc:
                if not self.fail_silently:
                    raise
                log.warning("notify: a message was not queued: %s", exc)
                continue
            sent += 1
        return sent

    def _session(self) -> _Sender:
        if _substitutes:
            return _substitutes[-1]
        o = self.options
        key = (o["service"], o["inbox"], o["service_account"], o["audience"])
        with _sessions_lock:
            if key not in _sessions:
                _sessions[key] = Session(str(o["service"]), str(o["inbox"]),
                                         service_account=o["service_account"],
                                         audience=o["audience"])
            return _sessions[key]


def to_wire(
    message: Any, options: Mapping[str, str | None], *, from_domains: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The request for one `EmailMessage` / `EmailMultiAlternatives`; raises `InvalidRequest`."""
    headers = dict(message.extra_headers)
    key = _pop_header(headers, IDEMPOTENCY_HEADER)
    from_tag, from_domain = _sender(
        _pop_header(headers, "From") or message.from_email, options, from_domains
    )
    reply_to = list(message.reply_to)
    if (reply_header := _pop_header(headers, "Reply-To")) is not None:
        reply_to = [a.strip() for a in reply_header.split(",") if a.strip()]
    text, html = _bodies(message)
    return build(
        str(options["service"]), to=list(message.to), cc=list(message.cc),
        bcc=list(message.bcc), reply_to=reply_to, subject=str(message.subject), text=text,
        html=html, headers={k: str(v) for k, v in headers.items()},
        tags=dict(getattr(message, "notify_tags", None) or {}),
        attachments=[_attachment(i, a) for i, a in enumerate(message.attachments)],
        idempotency_key=key, from_tag=from_tag, from_domain=from_domain,
    )


def _pop_header(headers: dict[str, Any], name: str) -> str | None:
    for key in list(headers):
        if key.lower() == name.lower():
            return str(headers.pop(key))
    return None


def _domains(value: object) -> frozenset[str]:
    """`NOTIFY_FROM_DOMAINS` as lower-case domains; a lone string is a mistake, not 1 domain
    per character."""
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(d, str) and d.strip() for d in value
    ):
        raise BackendMisconfigured(
            _OPTIONS["from_domains"], "must be a list of domain names, e.g. ['mail.example.com']"
        )
    return frozenset(d.strip().lower().rstrip(".") for d in value)


def _sender(
    from_email: str | None, options: Mapping[str, str | None], from_domains: frozenset[str]
) -> tuple[str | None, str | None]:
    """(from_tag, from_domain) for `from_email`: (None, None) for the service's own address (or
    Django's default); its plus tag when plus-addressed; its domain when that is one of
    `NOTIFY_FROM_DOMAINS`. Any other address is not the service's to send from."""
    address = parseaddr(from_email or "")[1].lower()
    default = parseaddr(getattr(settings, "DEFAULT_FROM_EMAIL", "") or "")[1].lower()
    own = parseaddr(options.get("from_email") or "")[1].lower()
    if not address or address in (default, own):
        return None, None
    if own:
        own_local, _, own_domain = own.rpartition("@")
        local, _, domain = address.rpartition("@")
        base, plus, tag = local.partition("+")
        if base == own_local and (domain == own_domain or domain in from_domains):
            return (tag if plus else None), (None if domain == own_domain else domain)
    raise InvalidRequest(
        "from_email", RejectReason.DISALLOWED_HEADER,
        f"{address} is not this service's address: mail goes out from the address in the "
        "registry (set NOTIFY_FROM_EMAIL to allow it and its plus-addressed variants, and "
        "NOTIFY_FROM_DOMAINS for its custom domains)",
    )


def _bodies(message: Any) -> tuple[str | None, str | None]:
    """(text, html): the body by its subtype, plus one `text/html` alternative."""
    body = message.body or None
    text, html = (None, body) if message.content_subtype == "html" else (body, None)
    for i, alternative in enumerate(getattr(message, "alternatives", ())):
        content, mimetype = alternative[0], alternative[1]
        if mimetype != "text/html" or html is not None:
            raise InvalidRequest(
                f"alternatives[{i}]", RejectReason.MALFORMED,
                f"only one text/html alternative can be sent, not {mimetype}",
            )
        html = content.decode() if isinstance(content, bytes) else str(content)
    if text is None and html is None:
        text = ""  # Django sends an empty body; the wire format needs one of the two
    return text, html


def _attachment(index: int, attachment: Any) -> tuple[str, bytes, str]:
    if isinstance(attachment, MIMEBase):
        if attachment.is_multipart():
            raise InvalidRequest(f"attachments[{index}]", RejectReason.MALFORMED,
                                 "a multipart attachment cannot be sent")
        payload = attachment.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        filename = attachment.get_filename() or f"attachment-{index + 1}"
        return filename, content, attachment.get_content_type()
    filename, content, mimetype = attachment[0], attachment[1], attachment[2]
    filename = filename or f"attachment-{index + 1}"
    if isinstance(content, str):
        content = content.encode()
    mimetype = mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return filename, bytes(content), mimetype


@contextmanager
def mock_session(service: str | None = None) -> Iterator[MockSession]:
    """Within this block mail sent through Django goes to a `MockSession`, not to the inbox.

    Sets `EMAIL_BACKEND` to this backend (Django's test runner would otherwise use `locmem`),
    so each message is mapped and validated exactly as in production.
    """
    from django.test import override_settings

    mock = MockSession(service or getattr(settings, "NOTIFY_SERVICE", None) or "")
    _substitutes.append(mock)
    try:
        with override_settings(EMAIL_BACKEND=BACKEND, NOTIFY_SERVICE=mock.service,
                               NOTIFY_INBOX=getattr(settings, "NOTIFY_INBOX", None) or "mock:"):
            yield mock
    finally:
        _substitutes.remove(mock)
