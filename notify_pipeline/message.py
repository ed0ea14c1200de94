"""The policy-approved message: what rendering, signing and delivery work from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Envelope:
    """A send request that passed every policy check, with the From address resolved."""

    service: str
    message_id: str
    from_display: str
    from_address: str
    to: tuple[str, ...]
    subject: str
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    text: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        """The sending domain: the part of the From address after `@`."""
        return self.from_address.rpartition("@")[2]

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient (to, cc, bcc), first occurrence kept, compared case-blind."""
        seen: set[str] = set()
        out: list[str] = []
        for addr in (*self.to, *self.cc, *self.bcc):
            if addr.lower() not in seen:
                seen.add(addr.lower())
                out.append(addr)
        return tuple(out)
