"""What goes into a Google Sheet: cell values, and how many rows fit.

Pure functions, no network: the exporter in `sheets.py` builds its requests from them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime

from notify_pipeline.analytics.sheets_errors import SheetsErrorReason, SheetsExportError

SHEET_CELL_LIMIT = 10_000_000
"""Google Sheets' limit on the cells of one spreadsheet, all worksheets together."""
CELL_CHAR_LIMIT = 50_000
"""Google Sheets' limit on the characters of one cell."""
RESERVED_ROWS = 2
"""Rows of the export sheet that are not data: the header, and the truncation note when present."""
_EXACT_INT = 2**53  # Sheets stores numbers as doubles: larger integers are written as text


def capacity_rows(columns: int, *, cell_limit: int = SHEET_CELL_LIMIT, other_cells: int = 0) -> int:
    """How many data rows the new export sheet may hold.

    The new sheet is written beside the old one and only then swapped in, so both must fit in
    the spreadsheet's limit at once: the export gets half of it, less whatever other worksheets
    hold while it is written, less the header and note rows.
    """
    if columns < 1:
        raise SheetsExportError(SheetsErrorReason.INVALID_CONFIG, "an export needs columns")
    budget = min(cell_limit // 2, cell_limit - other_cells)
    return max(budget // columns - RESERVED_ROWS, 0)


def truncation_note(written: int, total: int, cell_limit: int) -> str:
    """The sentence shown in the sheet's first row when older rows were left out."""
    return (
        f"Truncated: this sheet shows the newest {written:,} of {total:,} events; "
        f"{total - written:,} older events did not fit in Google Sheets' "
        f"{cell_limit:,}-cell limit. The warehouse table has them all."
    )


def to_cell(value: object) -> str | int | float | bool:
    """One cell: None empty, timestamps ISO 8601 (UTC), JSON as compact text, numbers as numbers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _EXACT_INT else str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else (value if math.isfinite(value) else str(value))
    if isinstance(value, datetime):
        if value != value:  # pandas' NaT is a datetime that is not equal to itself
            return ""
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return text[:CELL_CHAR_LIMIT]


def to_row(row: Sequence[object], columns: int) -> list[str | int | float | bool]:
    """One sheet row; a row of the wrong width is refused, not padded."""
    if len(row) != columns:
        raise SheetsExportError(
            SheetsErrorReason.INVALID_ROW,
            f"a row has {len(row)} values for {columns} columns",
        )
    return [to_cell(value) for value in row]
