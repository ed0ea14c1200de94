"""`MockSession`: a `Session` for a service's own tests, recording instead of sending.

It validates exactly as `Session` does, so a request that would fail in production fails in
the test too; what it records is the wire format, without the identity token.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from notify_pipeline.client.compose import TOKEN_PLACEHOLDER, Sender, encode
from notify_pipeline.client.session import check_service

Request = dict[str, Any]


class MockSession(Sender):
    """Records each request in `.sent` (oldest first); see the filters and `assert_sent`."""

    def __init__(self, service: str) -> None:
        check_service(service)
        self.service = service
        self.sent: list[Request] = []

    def __repr__(self) -> str:
        return f"MockSession(service={self.service!r}, sent={len(self.sent)})"

    def send_wire(self, wire: Mapping[str, Any]) -> str:
        """Record a request built by `compose.build`, checked as `Session.send_wire` checks it."""
        encode(wire, TOKEN_PLACEHOLDER)
        self.sent.append(copy.deepcopy(dict(wire)))
        return f"memory:{len(self.sent) - 1}"

    def clear(self) -> None:
        self.sent.clear()

    @property
    def last(self) -> Request:
        if not self.sent:
            raise AssertionError(f"{self.service} sent nothing")
        return self.sent[-1]

    def sent_to(self, address: str) -> list[Request]:
        """Requests with `address` among to, cc or bcc (compared case-blind)."""
        wanted = address.lower()
        return [r for r in self.sent
                if any(a.lower() == wanted for a in (*r["to"], *r["cc"], *r["bcc"]))]

    def with_subject(self, subject: str) -> list[Request]:
        return [r for r in self.sent if r["subject"] == subject]

    def with_tag(self, key: str, value: str | None = None) -> list[Request]:
        """Requests tagged `key` (with `value`, when given)."""
        return [r for r in self.sent
                if key in r["tags"] and (value is None or r["tags"][key] == value)]

    def assert_sent(
        self,
        *,
        to: str | None = None,
        subject: str | None = None,
        tag: tuple[str, str] | str | None = None,
        count: int | None = None,
    ) -> list[Request]:
        """The requests matching every given filter; AssertionError when there are none (or not
        `count` of them), listing what was sent."""
        found = list(self.sent)
        if to is not None:
            found = [r for r in found if r in self.sent_to(to)]
        if subject is not None:
            found = [r for r in found if r["subject"] == subject]
        if tag is not None:
            key, value = (tag, None) if isinstance(tag, str) else tag
            found = [r for r in found if r in self.with_tag(key, value)]
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = {k: v for k, v in (("to", to), ("subject", subject), ("tag", tag)) if v}
            expected = "any" if count is None else str(count)
            raise AssertionError(
                f"expected {expected} request(s) matching {wanted}, found {len(found)}; "
                f"sent: {self._summary()}"
            )
        return found

    def assert_nothing_sent(self) -> None:
        if self.sent:
            raise AssertionError(f"expected nothing sent; sent: {self._summary()}")

    def _summary(self) -> str:
        if not self.sent:
            return "nothing"
        return "; ".join(f"{r['id']} to {r['to'] + r['cc'] + r['bcc']} subject {r['subject']!r}"
                         for r in self.sent)
