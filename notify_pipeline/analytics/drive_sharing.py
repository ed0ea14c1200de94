"""Who may read a service's spreadsheet: reporting principals as Drive reader permissions.

Applied idempotently: a principal that already has access (directly or through the Shared Drive)
gets no second permission.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gspread.http_client import HTTPClient
from gspread.urls import DRIVE_FILES_API_V3_URL

from notify_pipeline.analytics.sheets_errors import (
    SheetsErrorReason,
    SheetsExportError,
    google_api,
)

READER = "reader"
_DRIVE_KINDS = {"user": "user", "serviceAccount": "user", "group": "group", "domain": "domain"}


@dataclass(frozen=True)
class Principal:
    """A reader of the spreadsheet as Drive permissions name it (`type` user, group or domain)."""

    kind: str
    address: str

    @classmethod
    def parse(cls, text: str) -> Principal:
        """Map an IAM-style principal (`user:`, `group:`, `serviceAccount:`, `domain:`) to Drive's.

        Drive has no service-account type: service accounts are shared with as users.
        """
        prefix, sep, address = text.partition(":")
        kind = _DRIVE_KINDS
        address = address.strip()
        if not sep or prefix not in kind or not address or any(c in address for c in " \r\n,"):
            raise SheetsExportError(
                SheetsErrorReason.INVALID_PRINCIPAL,
                f"cannot share a spreadsheet with {text!r}: expected user:, group:, "
                "serviceAccount: or domain: followed by an address",
            )
        if kind[prefix] != "domain" and "@" not in address:
            raise SheetsExportError(
                SheetsErrorReason.INVALID_PRINCIPAL, f"{text!r} names no email address"
            )
        return cls(kind[prefix], address)

    @property
    def key(self) -> tuple[str, str]:
        """Identity for comparing with existing permissions (Drive addresses are case-blind)."""
        return (self.kind, self.address.lower())

    def __str__(self) -> str:
        return f"{self.kind}:{self.address}"


def share_with_readers(
    http: HTTPClient,
    file_id: str,
    principals: Sequence[Principal],
    *,
    revoke_unlisted: bool,
    notify: bool,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Add a reader permission for each principal without access; returns (added, removed).

    With `revoke_unlisted`, direct reader permissions of principals no longer listed are
    removed; writers, owners and access inherited from the Shared Drive are never touched.
    """
    with google_api("list the spreadsheet's permissions"):
        existing = http.list_permissions(file_id)
    present: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for permission in existing:
        key = _permission_key(permission)
        if key is not None:
            present.setdefault(key, []).append(permission)
    wanted = {p.key: p for p in principals}
    added = []
    for key, principal in wanted.items():
        if key not in present:
            _grant(http, file_id, principal, notify)
            added.append(str(principal))
    removed = []
    for key, permissions in present.items():
        if key in wanted or not revoke_unlisted:
            continue
        for grant in permissions:
            if grant.get("role") == READER and _is_direct(grant):
                with google_api("remove a reader no longer listed"):
                    http.remove_permission(file_id, str(grant["id"]))
                removed.append(f"{key[0]}:{key[1]}")
    return tuple(added), tuple(removed)


def _grant(http: HTTPClient, file_id: str, principal: Principal, notify: bool) -> None:
    """`permissions.create` with a plain v3 body (gspread's helper also sends v2's `withLink`)."""
    params: dict[str, Any] = {"supportsAllDrives": "true"}
    body = {"type": principal.kind, "role": READER}
    if principal.kind == "domain":
        body["domain"] = principal.address
    else:
        body["emailAddress"] = principal.address
        params["sendNotificationEmail"] = "true" if notify else "false"
    with google_api(f"share the spreadsheet with {principal}"):
        http.request(
            "post", f"{DRIVE_FILES_API_V3_URL}/{file_id}/permissions", params=params, json=body
        )


def _permission_key(permission: Mapping[str, Any]) -> tuple[str, str] | None:
    kind = permission.get("type")
    if kind in ("user", "group") and permission.get("emailAddress"):
        return (str(kind), str(permission["emailAddress"]).lower())
    if kind == "domain" and permission.get("domain"):
        return ("domain", str(permission["domain"]).lower())
    return None


def _is_direct(permission: Mapping[str, Any]) -> bool:
    """Whether the permission is on the file itself, not (only) inherited from the Shared Drive."""
    details = permission.get("permissionDetails") or []
    return not details or any(not d.get("inherited", False) for d in details)
