"""The Sheets export against recorded Google API responses (no Sheets or Drive emulator exists).

Every response body below has the shape Google's API reference gives for that method (Drive v3
files.list / files.create / permissions.list / permissions.create, Sheets v4 spreadsheets.get /
batchUpdate / values.update). The tests assert on the requests the exporter makes.
"""

from __future__ import annotations

import json
import re
import traceback
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import responses
from google.auth.transport.requests import AuthorizedSession
from google.oauth2.credentials import Credentials
from responses.registries import OrderedRegistry

from notify_pipeline.analytics.drive_sharing import Principal
from notify_pipeline.analytics.sheet_values import (
    CELL_CHAR_LIMIT,
    SHEET_CELL_LIMIT,
    capacity_rows,
    to_cell,
)
from notify_pipeline.analytics.sheets import STAGING_PREFIX, SheetsExporter, spreadsheet_title
from notify_pipeline.analytics.sheets_errors import SheetsErrorReason, SheetsExportError

TOKEN = "ya29.test-access-token-must-never-leak"
FOLDER = "0AFolderInSharedDrive"
SID = "1XLwNvMVKOBj4WpSrTy5gnCOuCQI-HqVj-7jNx9o_Jtg"
DRIVE_FILES = "https://www.googleapis.com/drive/v3/files"
SHEET = f"https://sheets.googleapis.com/v4/spreadsheets/{SID}"
PERMISSIONS = f"{DRIVE_FILES}/{SID}/permissions"
COLUMNS = ["event_id", "occurred_at", "tags"]
T0 = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)


# -- response bodies, shaped as the API reference documents them ------------------------------


def file_list(*files: dict) -> dict:
    return {"files": list(files)}  # only the requested fields come back


def drive_file(file_id: str, created: str) -> dict:
    return {"id": file_id, "name": spreadsheet_title("lookup"), "createdTime": created}


def sheet_props(sheet_id: int, title: str, index: int, rows: int, cols: int) -> dict:
    return {
        "sheetId": sheet_id,
        "title": title,
        "index": index,
        "sheetType": "GRID",
        "gridProperties": {"rowCount": rows, "columnCount": cols},
    }


def spreadsheet(*sheets: dict) -> dict:
    return {
        "spreadsheetId": SID,
        "properties": {
            "title": spreadsheet_title("lookup"),
            "locale": "en_US",
            "autoRecalc": "ON_CHANGE",
            "timeZone": "Etc/GMT",
        },
        "sheets": [{"properties": s} for s in sheets],
        "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{SID}/edit",
    }


def batch_reply(*replies: dict) -> dict:
    return {"spreadsheetId": SID, "replies": list(replies)}


def add_sheet_reply(sheet_id: int, rows: int, cols: int) -> dict:
    return {"addSheet": {"properties": sheet_props(sheet_id, STAGING_PREFIX + "x)", 1, rows, cols)}}


def values_reply(rows: int, cols: int) -> dict:
    return {
        "spreadsheetId": SID,
        "updatedRange": f"'{STAGING_PREFIX}x)'!A1:C{rows}",
        "updatedRows": rows,
        "updatedColumns": cols,
        "updatedCells": rows * cols,
    }


def permission(pid: str, kind: str, email: str, role: str, inherited: bool = False) -> dict:
    return {
        "kind": "drive#permission",
        "id": pid,
        "type": kind,
        "emailAddress": email,
        "role": role,
        "displayName": email.split("@")[0],
        "permissionDetails": [
            {"permissionType": "member" if inherited else "file", "role": role,
             "inherited": inherited, **({"inheritedFrom": "0ASharedDrive"} if inherited else {})}
        ],
    }


def permission_list(*permissions: dict) -> dict:
    return {"kind": "drive#permissionList", "permissions": list(permissions)}


def created_permission(pid: str, kind: str) -> dict:
    return {"kind": "drive#permission", "id": pid, "type": kind, "role": "reader"}


def google_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


VALUES_URL = re.compile(re.escape(SHEET) + r"/values/.*")
BATCH_URL = SHEET + ":batchUpdate"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def api():
    with responses.RequestsMock(registry=OrderedRegistry, assert_all_requests_are_fired=True) as r:
        yield r


def exporter(**options) -> SheetsExporter:
    return SheetsExporter(FOLDER, credentials=Credentials(token=TOKEN), retry=False, **options)


def rows_newest_first(n: int) -> list[list[object]]:
    return [
        [f"evt-{i}", datetime(2026, 11, 30, 9, 0, tzinfo=UTC).replace(minute=59 - i),
         {"campaign": "nov", "n": i}]
        for i in range(n)
    ]


def calls(api, method: str, pattern: str) -> list:
    return [c for c in api.calls
            if c.request.method == method and re.search(pattern, c.request.url)]


def body(call) -> dict:
    return json.loads(call.request.body)


def query(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(call.request.url).query).items()}


def batch_requests(api) -> list[list[dict]]:
    return [body(c)["requests"] for c in calls(api, "POST", r":batchUpdate$")]


def new_spreadsheet_flow(api, first_rows: int, cols: int = 3) -> None:
    """files.list finds nothing, files.create, gspread's open, the worksheet read, the add."""
    api.get(DRIVE_FILES, json=file_list())
    api.post(DRIVE_FILES, json={"kind": "drive#file", "id": SID,
                                "name": spreadsheet_title("lookup"),
                                "mimeType": "application/vnd.google-apps.spreadsheet"})
    api.get(SHEET, json=spreadsheet(sheet_props(0, "Sheet1", 0, 1000, 26)))
    api.get(SHEET, json={"sheets": [{"properties": sheet_props(0, "Sheet1", 0, 1000, 26)}]})
    api.post(BATCH_URL, json=batch_reply(add_sheet_reply(77, 1 + first_rows, cols)))


# -- the first export of a service -------------------------------------------------------------


def test_first_export_creates_the_sheet_in_the_folder_and_swaps_it_in(api):
    new_spreadsheet_flow(api, first_rows=2)
    api.put(VALUES_URL, json=values_reply(3, 3))
    api.post(BATCH_URL, json=batch_reply({}, {}, {}))
    api.get(PERMISSIONS, json=permission_list(
        permission("p-sa", "user", "exporter@proj.iam.gserviceaccount.com", "organizer",
                   inherited=True)))
    api.post(PERMISSIONS, json=created_permission("p1", "group"))
    api.post(PERMISSIONS, json=created_permission("p2", "user"))

    result = exporter().export(
        "lookup", COLUMNS, rows_newest_first(2),
        ["group:analysts@example.org", "serviceAccount:looker@proj.iam.gserviceaccount.com"],
    )

    listing, create = api.calls[0], api.calls[1]
    q = query(listing)
    assert f"'{FOLDER}' in parents" in q["q"] and "trashed = false" in q["q"]
    assert "name = 'notify events: lookup'" in q["q"]
    assert (q["supportsAllDrives"], q["includeItemsFromAllDrives"], q["corpora"]) == (
        "true", "true", "allDrives")
    assert create.request.method == "POST" and query(create)["supportsAllDrives"] == "True"
    assert body(create) == {"name": "notify events: lookup", "parents": [FOLDER],
                            "mimeType": "application/vnd.google-apps.spreadsheet"}

    add, swap = batch_requests(api)
    assert [list(r) for r in add] == [["addSheet"]]
    staging = add[0]["addSheet"]["properties"]
    assert staging["title"].startswith(STAGING_PREFIX)
    assert staging["gridProperties"] == {"rowCount": 3, "columnCount": 3}

    (write,) = calls(api, "PUT", "/values/")
    assert unquote(urlparse(write.request.url).path).endswith(f"/values/'{staging['title']}'!A1")
    assert query(write) == {"valueInputOption": "RAW"}
    assert body(write)["values"] == [
        COLUMNS,
        ["evt-0", "2026-11-30T09:59:00+00:00", '{"campaign":"nov","n":0}'],
        ["evt-1", "2026-11-30T09:58:00+00:00", '{"campaign":"nov","n":1}'],
    ]

    # The old sheet goes and the new one takes its name and place in the same request.
    assert swap[0] == {"deleteSheet": {"sheetId": 0}}
    assert swap[-1] == {"updateSheetProperties": {
        "properties": {"sheetId": 77, "title": "events", "index": 0,
                       "gridProperties": {"frozenRowCount": 1}},
        "fields": "title,index,gridProperties.frozenRowCount"}}
    assert not any("insertDimension" in r or "deleteDimension" in r for r in swap)

    grants = calls(api, "POST", "/permissions")
    assert [body(c) for c in grants] == [
        {"type": "group", "role": "reader", "emailAddress": "analysts@example.org"},
        {"type": "user", "role": "reader", "emailAddress": "looker@proj.iam.gserviceaccount.com"},
    ]
    assert all(query(c) == {"supportsAllDrives": "true", "sendNotificationEmail": "false"}
               for c in grants)
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in api.calls)

    assert result.created and not result.truncated and result.note is None
    assert (result.spreadsheet_id, result.rows_written, result.rows_total) == (SID, 2, 2)
    assert result.spreadsheet_url == f"https://docs.google.com/spreadsheets/d/{SID}"
    assert result.permissions_added == (
        "group:analysts@example.org", "user:looker@proj.iam.gserviceaccount.com")
    assert result.permissions_removed == ()
    assert TOKEN not in json.dumps(result.as_metadata())


# -- a refresh ---------------------------------------------------------------------------------


def test_refresh_reuses_the_oldest_sheet_and_adds_no_permission_twice(api):
    api.get(DRIVE_FILES, json=file_list(drive_file("1Newer", "2026-11-02T10:00:00.000Z"),
                                        drive_file(SID, "2026-10-01T08:00:00.000Z")))
    api.get(SHEET, json={"sheets": [
        {"properties": sheet_props(11, "events", 0, 40, 3)},
        {"properties": sheet_props(22, STAGING_PREFIX + "dead0000)", 1, 5, 3)},
    ]})
    api.post(BATCH_URL, json=batch_reply({}, add_sheet_reply(33, 2, 3)))
    api.put(VALUES_URL, json=values_reply(2, 3))
    api.post(BATCH_URL, json=batch_reply({}, {}, {}))
    api.get(PERMISSIONS, json=permission_list(
        permission("p-drive", "group", "Analysts@Example.org", "reader", inherited=True),
        permission("p-direct", "user", "looker@proj.iam.gserviceaccount.com", "reader"),
        permission("p-gone", "user", "former@example.org", "reader"),
        permission("p-editor", "user", "editor@example.org", "writer"),
        permission("p-org", "user", "admin@example.org", "organizer", inherited=True),
    ))
    api.delete(f"{PERMISSIONS}/p-gone", status=204)

    result = exporter().export(
        "lookup", COLUMNS, rows_newest_first(1),
        ["group:analysts@example.org", "serviceAccount:looker@proj.iam.gserviceaccount.com"],
    )

    assert not calls(api, "POST", r"drive/v3/files(\?|$)")  # no second spreadsheet
    add, swap = batch_requests(api)
    # The worksheet left by an interrupted run goes before the new one is added.
    assert add[0] == {"deleteSheet": {"sheetId": 22}} and "addSheet" in add[1]
    assert [r for r in swap if "deleteSheet" in r] == [{"deleteSheet": {"sheetId": 11}}]
    assert not calls(api, "POST", "/permissions")
    assert [c.request.url.split("?")[0] for c in calls(api, "DELETE", "/permissions/")] == [
        f"{PERMISSIONS}/p-gone"]
    assert not result.created and result.spreadsheet_id == SID
    assert result.permissions_added == ()
    assert result.permissions_removed == ("user:former@example.org",)


def test_domain_reader_gets_a_domain_permission_without_notification(api):
    new_spreadsheet_flow(api, first_rows=0)
    api.put(VALUES_URL, json=values_reply(1, 3))
    api.post(BATCH_URL, json=batch_reply({}, {}, {}))
    api.get(PERMISSIONS, json=permission_list())
    api.post(PERMISSIONS, json=created_permission("p1", "domain"))

    result = exporter().export("lookup", COLUMNS, [], ["domain:example.org"])

    (grant,) = calls(api, "POST", "/permissions")
    assert body(grant) == {"type": "domain", "role": "reader", "domain": "example.org"}
    assert query(grant) == {"supportsAllDrives": "true"}
    _, swap = batch_requests(api)
    # With no data row there is nothing to freeze under the header (Sheets refuses that).
    assert swap[-1]["updateSheetProperties"]["fields"] == "title,index"
    assert (result.rows_written, result.rows_total) == (0, 0)


# -- large exports -----------------------------------------------------------------------------


def test_rows_are_written_in_chunks_and_the_grid_grows_by_doubling(api):
    new_spreadsheet_flow(api, first_rows=2)
    api.put(VALUES_URL, json=values_reply(3, 3))
    api.post(BATCH_URL, json=batch_reply({}))  # grow 3 -> 6 rows
    api.put(VALUES_URL, json=values_reply(2, 3))
    api.post(BATCH_URL, json=batch_reply({}))  # grow 6 -> 12 rows
    api.put(VALUES_URL, json=values_reply(2, 3))
    api.put(VALUES_URL, json=values_reply(1, 3))
    api.post(BATCH_URL, json=batch_reply({}, {}, {}, {}))
    api.get(PERMISSIONS, json=permission_list())

    result = exporter(chunk_rows=2).export("lookup", COLUMNS, iter(rows_newest_first(7)), [])

    writes = calls(api, "PUT", "/values/")
    starts = [unquote(c.request.url).split("!")[1].split("?")[0] for c in writes]
    assert starts == ["A1", "A4", "A6", "A8"]
    assert [len(body(c)["values"]) for c in writes] == [3, 2, 2, 1]
    assert [body(c)["values"][0][0] for c in writes[1:]] == ["evt-2", "evt-4", "evt-6"]
    _, grow1, grow2, swap = batch_requests(api)
    assert [grow1[0]["appendDimension"]["length"], grow2[0]["appendDimension"]["length"]] == [3, 6]
    # 12 grid rows hold the header and 7 events: the 4 spare rows go in the swap.
    assert {"deleteDimension": {"range": {"sheetId": 77, "dimension": "ROWS",
                                          "startIndex": 8, "endIndex": 12}}} in swap
    assert result.rows_written == 7 and not result.truncated


def test_past_the_cell_limit_the_newest_rows_stay_and_the_first_row_says_so(api):
    # A 40-cell limit with a 6-cell sheet in place: the export gets 20 cells, 6 rows of 3,
    # less the header and note rows: 4 events.
    api.get(DRIVE_FILES, json=file_list(drive_file(SID, "2026-10-01T08:00:00.000Z")))
    api.get(SHEET, json={"sheets": [{"properties": sheet_props(0, "events", 0, 2, 3)}]})
    api.post(BATCH_URL, json=batch_reply(add_sheet_reply(77, 5, 3)))
    api.put(VALUES_URL, json=values_reply(5, 3))
    api.post(BATCH_URL, json=batch_reply({}, {}, {}, {}, {}))
    api.get(PERMISSIONS, json=permission_list())

    result = exporter(cell_limit=40).export("lookup", COLUMNS, iter(rows_newest_first(7)), [])

    (write,) = calls(api, "PUT", "/values/")
    assert [row[0] for row in body(write)["values"][1:]] == ["evt-0", "evt-1", "evt-2", "evt-3"]
    _, swap = batch_requests(api)
    assert {"insertDimension": {"range": {"sheetId": 77, "dimension": "ROWS", "startIndex": 0,
                                          "endIndex": 1}, "inheritFromBefore": False}} in swap
    (note_cells,) = [r["updateCells"] for r in swap if "updateCells" in r]
    note = note_cells["rows"][0]["values"][0]["userEnteredValue"]["stringValue"]
    assert note_cells["start"] == {"sheetId": 77, "rowIndex": 0, "columnIndex": 0}
    assert "newest 4 of 7 events" in note and "3 older events" in note and "40-cell" in note
    assert swap[-1]["updateSheetProperties"]["properties"]["gridProperties"] == {
        "frozenRowCount": 2}
    assert result.truncated and result.note == note
    assert (result.rows_written, result.rows_total) == (4, 7)
    assert result.as_metadata()["truncated"] is True


def test_capacity_at_the_real_limit_leaves_room_for_the_old_sheet_during_the_swap():
    columns = 13
    fresh = capacity_rows(columns, other_cells=1000 * 26)  # a new spreadsheet's Sheet1
    assert fresh == 5_000_000 // 13 - 2 == 384_613
    exported_cells = (fresh + 2) * columns
    assert exported_cells <= SHEET_CELL_LIMIT // 2
    # The next refresh writes beside that sheet: the same rows fit again, and both fit at once.
    again = capacity_rows(columns, other_cells=exported_cells)
    assert again == fresh
    assert exported_cells + (again + 2) * columns <= SHEET_CELL_LIMIT
    # Anything else in the way shrinks the export instead of overflowing the spreadsheet.
    crowded = capacity_rows(columns, other_cells=6_000_000)
    assert crowded == 4_000_000 // 13 - 2
    assert capacity_rows(columns, other_cells=SHEET_CELL_LIMIT) == 0
    with pytest.raises(SheetsExportError) as err:
        capacity_rows(0)
    assert err.value.reason is SheetsErrorReason.INVALID_CONFIG


# -- failures ----------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_sheet_alone_and_removes_the_staging_one(api):
    api.get(DRIVE_FILES, json=file_list(drive_file(SID, "2026-10-01T08:00:00.000Z")))
    api.get(SHEET, json={"sheets": [{"properties": sheet_props(11, "events", 0, 40, 3)}]})
    api.post(BATCH_URL, json=batch_reply(add_sheet_reply(33, 3, 3)))
    api.put(VALUES_URL, status=429, json=google_error(
        429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Write requests'"))
    api.post(BATCH_URL, json=batch_reply({}))

    with pytest.raises(SheetsExportError) as err:
        exporter().export("lookup", COLUMNS, rows_newest_first(2), [])

    assert err.value.reason is SheetsErrorReason.API_ERROR and err.value.status == 429
    assert "RESOURCE_EXHAUSTED" in str(err.value) and "write rows" in str(err.value)
    add, cleanup = batch_requests(api)
    assert cleanup == [{"deleteSheet": {"sheetId": 33}}]
    assert not any(r.get("deleteSheet", {}).get("sheetId") == 11 for r in add + cleanup)


def test_errors_and_reprs_carry_no_credential(api):
    api.get(DRIVE_FILES, status=403, json={"error": {
        "errors": [{"domain": "global", "reason": "insufficientFilePermissions",
                    "message": "The user does not have sufficient permissions for this file."}],
        "code": 403,
        "message": "The user does not have sufficient permissions for this file.",
    }})
    sheets = exporter()

    with pytest.raises(SheetsExportError) as err:
        sheets.export("lookup", COLUMNS, [], [])

    assert err.value.status == 403 and "sufficient permissions" in str(err.value)
    shown = "".join(traceback.format_exception(err.value)) + repr(err.value) + repr(sheets)
    assert TOKEN not in shown and "Bearer" not in shown
    assert err.value.__cause__ is None


def test_a_row_of_the_wrong_width_is_refused_and_nothing_is_swapped(api):
    new_spreadsheet_flow(api, first_rows=1)
    api.put(VALUES_URL, json=values_reply(2, 3))
    api.post(BATCH_URL, json=batch_reply({}))

    rows = [*rows_newest_first(1), ["evt-1", T0]]
    with pytest.raises(SheetsExportError) as err:
        exporter(chunk_rows=1).export("lookup", COLUMNS, rows, [])

    assert err.value.reason is SheetsErrorReason.INVALID_ROW
    assert "2 values for 3 columns" in str(err.value)
    _, cleanup = batch_requests(api)
    assert cleanup == [{"deleteSheet": {"sheetId": 77}}]  # Sheet1 (id 0) was never deleted


@pytest.mark.parametrize("bad", ["allUsers", "user:", "group:not-an-address",
                                 "owner:someone@example.org", "user:a@example.org,b@example.org"])
def test_unknown_principals_are_refused_before_any_request(api, bad):
    with pytest.raises(SheetsExportError) as err:
        exporter().export("lookup", COLUMNS, [], ["user:ok@example.org", bad])
    assert err.value.reason is SheetsErrorReason.INVALID_PRINCIPAL
    assert not api.calls


def test_principals_map_to_drive_permission_types():
    assert Principal.parse("user:A@Example.org") == Principal("user", "A@Example.org")
    assert Principal.parse("serviceAccount:x@p.iam.gserviceaccount.com").kind == "user"
    assert Principal.parse("group:g@example.org").key == ("group", "g@example.org")
    assert Principal.parse("domain:example.org") == Principal("domain", "example.org")


@pytest.mark.parametrize("options", [{}, {"credentials": Credentials(token=TOKEN),
                                          "session": object()}])
def test_the_exporter_needs_exactly_one_way_to_authenticate(options):
    with pytest.raises(SheetsExportError) as err:
        SheetsExporter(FOLDER, **options)
    assert err.value.reason is SheetsErrorReason.INVALID_CONFIG


def test_an_authorised_session_may_stand_in_for_credentials(api):
    api.get(DRIVE_FILES, status=404, json={"error": {
        "errors": [{"domain": "global", "reason": "notFound",
                    "message": f"File not found: {FOLDER}.",
                    "locationType": "parameter", "location": "fileId"}],
        "code": 404, "message": f"File not found: {FOLDER}.",
    }})
    session = AuthorizedSession(Credentials(token=TOKEN))
    sheets = SheetsExporter(FOLDER, session=session, retry=False)

    with pytest.raises(SheetsExportError) as err:
        sheets.export("lookup", COLUMNS, [], [])

    assert err.value.status == 404 and "File not found" in str(err.value)
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_missing_application_default_credentials_is_a_configuration_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(SheetsExportError) as err:
        SheetsExporter.from_application_default(FOLDER)
    assert err.value.reason is SheetsErrorReason.INVALID_CONFIG


def test_a_folder_id_is_required():
    with pytest.raises(SheetsExportError) as err:
        SheetsExporter("  ", credentials=Credentials(token=TOKEN))
    assert err.value.reason is SheetsErrorReason.INVALID_CONFIG


# -- values ------------------------------------------------------------------------------------


def test_values_become_cells_the_way_analysts_read_them():
    assert to_cell(None) == ""
    assert to_cell(datetime(2026, 11, 30, 10, 0, tzinfo=UTC)) == "2026-11-30T10:00:00+00:00"
    assert to_cell(datetime(2026, 11, 30, 10, 0)) == "2026-11-30T10:00:00+00:00"  # naive is UTC
    assert to_cell(date(2026, 11, 30)) == "2026-11-30"
    assert to_cell({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert to_cell(True) is True and to_cell(3) == 3 and to_cell(0.25) == 0.25
    assert to_cell(float("nan")) == "" and to_cell(float("inf")) == "inf"
    assert to_cell(2**60) == str(2**60)
    assert to_cell("=IMPORTXML(x)") == "=IMPORTXML(x)"  # text; RAW keeps it from evaluating
    assert len(to_cell("x" * (CELL_CHAR_LIMIT + 10))) == CELL_CHAR_LIMIT
