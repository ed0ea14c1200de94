"""One Google Sheet per service in a Shared Drive folder, its contents replaced atomically.

Service accounts own no Drive storage, so each spreadsheet is created inside a Shared Drive
folder (`files.create` with `parents` and `supportsAllDrives`, as gspread's `Client.create` does).
A refresh writes the rows into a new worksheet and swaps it in with one `spreadsheets.batchUpdate`,
so a reader sees the old contents or the new ones, never half of them.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import google.auth
import gspread
import requests
from google.auth.credentials import Credentials
from google.auth.exceptions import DefaultCredentialsError
from gspread.http_client import BackOffHTTPClient, HTTPClient
from gspread.urls import DRIVE_FILES_API_V3_URL, SPREADSHEET_DRIVE_URL

from notify_pipeline.analytics.drive_sharing import Principal, share_with_readers
from notify_pipeline.analytics.sheet_values import (
    SHEET_CELL_LIMIT,
    capacity_rows,
    to_row,
    truncation_note,
)
from notify_pipeline.analytics.sheets_errors import (
    SheetsErrorReason,
    SheetsExportError,
    google_api,
)

SHEETS_SCOPES = (
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/drive",
)
EXPORT_SHEET_TITLE = "events"
STAGING_PREFIX = "events (refreshing "
DEFAULT_CHUNK_ROWS = 5_000
_SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"

Cell = str | int | float | bool


def spreadsheet_title(service_id: str) -> str:
    """The one spreadsheet name per service, so a refresh finds the sheet it made before."""
    return f"notify events: {service_id}"


@dataclass(frozen=True)
class ExportResult:
    """What one export did, for the asset's materialization metadata."""

    spreadsheet_id: str
    spreadsheet_url: str
    created: bool
    rows_written: int
    rows_total: int
    truncated: bool
    note: str | None
    permissions_added: tuple[str, ...]
    permissions_removed: tuple[str, ...]

    def as_metadata(self) -> dict[str, str | int | bool]:
        """Plain values only: ids, counts and principals, never a credential."""
        return {
            "spreadsheet_id": self.spreadsheet_id,
            "spreadsheet_url": self.spreadsheet_url,
            "created": self.created,
            "rows_written": self.rows_written,
            "rows_total": self.rows_total,
            "truncated": self.truncated,
            "note": self.note or "",
            "permissions_added": ", ".join(self.permissions_added),
            "permissions_removed": ", ".join(self.permissions_removed),
        }


class SheetsExporter:
    """Writes a service's events to its spreadsheet in one Shared Drive folder.

    Give exactly one of `credentials` (scoped for `SHEETS_SCOPES`), a gspread `client`, or an
    already authorised `session`. `cell_limit` and `chunk_rows` exist so tests can reach the
    limits with small data.
    """

    def __init__(
        self,
        folder_id: str,
        *,
        credentials: Credentials | None = None,
        client: gspread.Client | None = None,
        session: requests.Session | None = None,
        cell_limit: int = SHEET_CELL_LIMIT,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        revoke_unlisted: bool = True,
        notify_new_readers: bool = False,
        retry: bool = True,
        timeout_seconds: float = 120.0,
    ) -> None:
        if not folder_id.strip():
            raise SheetsExportError(
                SheetsErrorReason.INVALID_CONFIG, "a Shared Drive folder id is required"
            )
        if sum(x is not None for x in (credentials, client, session)) != 1:
            raise SheetsExportError(
                SheetsErrorReason.INVALID_CONFIG, "give exactly one of credentials, client, session"
            )
        if chunk_rows < 1 or cell_limit < 2:
            raise SheetsExportError(
                SheetsErrorReason.INVALID_CONFIG, "chunk_rows and cell_limit must be positive"
            )
        if client is None:
            # gspread uses `session` as given (already authorised) and ignores `auth` then.
            client = gspread.Client(
                credentials,  # type: ignore[arg-type]
                session=session,
                http_client=BackOffHTTPClient if retry else HTTPClient,
            )
            client.set_timeout(timeout_seconds)
        self._client = client
        self._http = client.http_client
        self._folder_id = folder_id.strip()
        self._cell_limit = cell_limit
        self._chunk_rows = chunk_rows
        self._revoke_unlisted = revoke_unlisted
        self._notify = notify_new_readers

    @classmethod
    def from_application_default(cls, folder_id: str, **options: Any) -> SheetsExporter:
        """An exporter acting as the deployment's Application Default Credentials."""
        try:
            credentials, _ = google.auth.default(scopes=SHEETS_SCOPES)
        except DefaultCredentialsError as err:
            raise SheetsExportError(
                SheetsErrorReason.INVALID_CONFIG,
                f"no Application Default Credentials to export with ({type(err).__name__})",
            ) from None
        return cls(folder_id, credentials=credentials, **options)

    def __repr__(self) -> str:
        return f"SheetsExporter(folder_id={self._folder_id!r}, cell_limit={self._cell_limit})"

    def export(
        self,
        service_id: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
        share_with: Sequence[str],
    ) -> ExportResult:
        """Replace the service's sheet with `rows`, newest first, and share it with `share_with`.

        `rows` is read once, in chunks; when more rows come than fit, the first ones (the newest)
        are kept, the rest are counted, and the sheet's first row says so.
        """
        principals = [Principal.parse(text) for text in share_with]
        header: list[Cell] = [str(name) for name in columns]
        if not header:
            raise SheetsExportError(SheetsErrorReason.INVALID_CONFIG, "an export needs columns")
        spreadsheet_id, created = self._find_or_create(spreadsheet_title(service_id))
        written, total, note = self._replace(spreadsheet_id, header, iter(rows))
        added, removed = share_with_readers(
            self._http,
            spreadsheet_id,
            principals,
            revoke_unlisted=self._revoke_unlisted,
            notify=self._notify,
        )
        return ExportResult(
            spreadsheet_id=spreadsheet_id,
            spreadsheet_url=SPREADSHEET_DRIVE_URL % spreadsheet_id,
            created=created,
            rows_written=written,
            rows_total=total,
            truncated=note is not None,
            note=note,
            permissions_added=added,
            permissions_removed=removed,
        )

    # -- the spreadsheet -------------------------------------------------------------------

    def _find_or_create(self, title: str) -> tuple[str, bool]:
        """The oldest untrashed spreadsheet of that name in the folder, else a new one there."""
        query = (
            f"name = '{_quoted(title)}' and '{_quoted(self._folder_id)}' in parents"
            f" and mimeType = '{_SPREADSHEET_MIME}' and trashed = false"
        )
        params: dict[str, Any] = {
            "q": query,
            "corpora": "allDrives",
            "includeItemsFromAllDrives": "true",
            "supportsAllDrives": "true",
            "fields": "nextPageToken,files(id,name,createdTime)",
            "pageSize": 100,
        }
        files: list[Mapping[str, Any]] = []
        with google_api("look for the spreadsheet in the Shared Drive folder"):
            while True:
                page = self._http.request("get", DRIVE_FILES_API_V3_URL, params=params).json()
                files.extend(page.get("files", []))
                if not page.get("nextPageToken"):
                    break
                params["pageToken"] = page["nextPageToken"]
        if files:
            oldest = min(files, key=lambda f: (str(f.get("createdTime", "")), str(f["id"])))
            return str(oldest["id"]), False
        with google_api("create the spreadsheet in the Shared Drive folder"):
            spreadsheet = self._client.create(title, folder_id=self._folder_id)
        return spreadsheet.id, True

    def _sheets(self, spreadsheet_id: str) -> list[Mapping[str, Any]]:
        with google_api("read the spreadsheet's worksheets"):
            meta = self._http.fetch_sheet_metadata(
                spreadsheet_id, params={"includeGridData": "false", "fields": "sheets.properties"}
            )
        return [sheet["properties"] for sheet in meta.get("sheets", [])]

    def _batch(self, spreadsheet_id: str, requests_: list[dict[str, Any]], action: str) -> Any:
        with google_api(action):
            return self._http.batch_update(spreadsheet_id, {"requests": requests_})

    # -- contents --------------------------------------------------------------------------

    def _replace(
        self, spreadsheet_id: str, header: list[Cell], rows: Iterator[Sequence[object]]
    ) -> tuple[int, int, str | None]:
        """Write into a staging worksheet, then swap it in: (rows written, rows seen, note)."""
        width = len(header)
        sheets = self._sheets(spreadsheet_id)
        stale = [s for s in sheets if str(s.get("title", "")).startswith(STAGING_PREFIX)]
        old = [s for s in sheets if s not in stale]
        capacity = capacity_rows(
            width, cell_limit=self._cell_limit, other_cells=sum(_cells(s) for s in old)
        )
        first = self._take(rows, min(self._chunk_rows, capacity), width)
        title = f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]})"
        grid = 1 + len(first)
        staging_id = self._add_staging(spreadsheet_id, title, grid, width, stale, bool(old))
        try:
            self._write(spreadsheet_id, title, 1, [header, *first])
            written = len(first)
            while written < capacity:
                chunk = self._take(rows, min(self._chunk_rows, capacity - written), width)
                if not chunk:
                    break
                grid = self._grow(spreadsheet_id, staging_id, grid, 1 + written + len(chunk),
                                  1 + capacity)
                self._write(spreadsheet_id, title, 2 + written, chunk)
                written += len(chunk)
            total = written + sum(1 for _ in rows)
            note = truncation_note(written, total, self._cell_limit) if total > written else None
            self._swap(spreadsheet_id, staging_id, old, grid, written, width, note)
        except BaseException:
            with contextlib.suppress(SheetsExportError):
                self._batch(spreadsheet_id, [{"deleteSheet": {"sheetId": staging_id}}],
                            "remove the unfinished worksheet")
            raise
        return written, total, note

    def _take(self, rows: Iterator[Sequence[object]], count: int, width: int) -> list[list[Cell]]:
        return [to_row(row, width) for row in itertools.islice(rows, count)]

    def _add_staging(
        self,
        spreadsheet_id: str,
        title: str,
        grid: int,
        width: int,
        stale: list[Mapping[str, Any]],
        has_old: bool,
    ) -> int:
        """Add the staging worksheet and drop any left by an interrupted run, in one request."""
        add = {"addSheet": {"properties": {
            "title": title, "gridProperties": {"rowCount": grid, "columnCount": width},
        }}}
        drops = [{"deleteSheet": {"sheetId": s["sheetId"]}} for s in stale]
        # Drops first frees their cells; a spreadsheet may not lose its last worksheet, though.
        requests_ = [*drops, add] if has_old else [add, *drops]
        reply = self._batch(spreadsheet_id, requests_, "add the staging worksheet")
        index = requests_.index(add)
        return int(reply["replies"][index]["addSheet"]["properties"]["sheetId"])

    def _grow(self, spreadsheet_id: str, sheet_id: int, grid: int, needed: int, most: int) -> int:
        """Double the staging grid when a chunk needs more rows, so grows stay few."""
        if needed <= grid:
            return grid
        new_grid = min(max(needed, grid * 2), most)
        self._batch(spreadsheet_id, [{"appendDimension": {
            "sheetId": sheet_id, "dimension": "ROWS", "length": new_grid - grid,
        }}], "grow the staging worksheet")
        return new_grid

    def _write(self, spreadsheet_id: str, title: str, row: int, values: list[list[Cell]]) -> None:
        # RAW: a subject such as "=IMPORTXML(...)" stays text, never becomes a formula.
        with google_api("write rows to the staging worksheet"):
            self._http.values_update(
                spreadsheet_id,
                f"{_a1_sheet(title)}!A{row}",
                params={"valueInputOption": "RAW"},
                body={"majorDimension": "ROWS", "values": values},
            )

    def _swap(
        self,
        spreadsheet_id: str,
        sheet_id: int,
        old: list[Mapping[str, Any]],
        grid: int,
        written: int,
        width: int,
        note: str | None,
    ) -> None:
        """One batchUpdate: drop the old worksheets, trim, add the note, rename into place."""
        requests_: list[dict[str, Any]] = [{"deleteSheet": {"sheetId": s["sheetId"]}} for s in old]
        if grid > 1 + written:
            requests_.append({"deleteDimension": {"range": {
                "sheetId": sheet_id, "dimension": "ROWS",
                "startIndex": 1 + written, "endIndex": grid,
            }}})
        header_rows = 1
        if note is not None:
            header_rows = 2
            requests_.append({"insertDimension": {"range": {
                "sheetId": sheet_id, "dimension": "ROWS", "startIndex": 0, "endIndex": 1,
            }, "inheritFromBefore": False}})
            requests_.append({"updateCells": {
                "start": {"sheetId": sheet_id, "rowIndex": 0, "columnIndex": 0},
                "rows": [{"values": [{"userEnteredValue": {"stringValue": note}}]}],
                "fields": "userEnteredValue",
            }})
        requests_.append({"repeatCell": {
            "range": {"sheetId": sheet_id, "startRowIndex": 0, "endRowIndex": header_rows,
                      "startColumnIndex": 0, "endColumnIndex": width},
            "cell": {"userEnteredFormat": {"textFormat": {"bold": True}}},
            "fields": "userEnteredFormat.textFormat.bold",
        }})
        properties: dict[str, Any] = {"sheetId": sheet_id, "title": EXPORT_SHEET_TITLE, "index": 0}
        fields = "title,index"
        if written > 0:  # Sheets refuses to freeze every row of a sheet
            properties["gridProperties"] = {"frozenRowCount": header_rows}
            fields += ",gridProperties.frozenRowCount"
        requests_.append({"updateSheetProperties": {"properties": properties, "fields": fields}})
        self._batch(spreadsheet_id, requests_, "swap the new worksheet into place")


def _cells(properties: Mapping[str, Any]) -> int:
    grid = properties.get("gridProperties", {})
    return int(grid.get("rowCount", 0)) * int(grid.get("columnCount", 0))


def _quoted(text: str) -> str:
    """A value inside a single-quoted Drive query string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _a1_sheet(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"
