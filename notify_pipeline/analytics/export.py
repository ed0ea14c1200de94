"""The local `sheets_export`: a service's recent events as CSV and XLSX, each written atomically.

Rows arrive in chunks from the warehouse and go straight to both files (openpyxl's write-only
mode), so memory stays bounded. A worksheet holds at most 1,048,576 rows: beyond that the XLSX
file stops at the oldest rows that fit and says so in a second sheet; the CSV file has them all.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from openpyxl import Workbook

XLSX_MAX_ROWS = 1_048_576  # including the header row


@dataclass(frozen=True)
class ExportResult:
    rows: int
    csv_path: Path
    xlsx_path: Path
    xlsx_rows: int

    @property
    def xlsx_truncated(self) -> bool:
        return self.xlsx_rows < self.rows


def _csv_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _xlsx_value(value: Any) -> Any:
    """openpyxl refuses aware datetimes: UTC without the offset (the header says UTC)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def write_exports(directory: Path, columns: Sequence[str],
                  chunks: Iterable[Sequence[Sequence[Any]]]) -> ExportResult:
    """Write `events.csv` and `events.xlsx` under `directory`, replacing them only once both
    are complete."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, xlsx_path = directory / "events.csv", directory / "events.xlsx"
    rows = xlsx_rows = 0
    with ExitStack() as stack:
        csv_tmp = stack.enter_context(_temporary(directory, ".csv"))
        xlsx_tmp = stack.enter_context(_temporary(directory, ".xlsx"))
        book = Workbook(write_only=True)
        sheet = book.create_sheet("events")
        header = [f"{c} (UTC)" if c.endswith("_at") else c for c in columns]
        sheet.append(header)
        with csv_tmp.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for chunk in chunks:
                for row in chunk:
                    writer.writerow([_csv_value(v) for v in row])
                    rows += 1
                    if xlsx_rows < XLSX_MAX_ROWS - 1:
                        sheet.append([_xlsx_value(v) for v in row])
                        xlsx_rows += 1
            _sync(out)
        if xlsx_rows < rows:
            note = book.create_sheet("note")
            note.append([f"Only the first {xlsx_rows} of {rows} rows fit in a worksheet;"
                         " events.csv has them all."])
        book.save(str(xlsx_tmp))
        csv_tmp.replace(csv_path)
        xlsx_tmp.replace(xlsx_path)
    return ExportResult(rows, csv_path, xlsx_path, xlsx_rows)


def _sync(out: IO[str]) -> None:
    out.flush()
    os.fsync(out.fileno())


@contextmanager
def _temporary(directory: Path, suffix: str) -> Iterator[Path]:
    """A temporary file beside the target (same file system, so the rename is atomic),
    removed unless it was renamed into place."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=suffix)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
