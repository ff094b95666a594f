"""Tables out as CSV (Excel-ready encodings) or XLSX; the same cells either way.

* ``utf-8-sig``: UTF-8 with a byte-order mark — what makes Excel open a UTF-8 CSV as
  UTF-8 instead of the system code page (without it Japanese text is garbled).
* ``shift_jis``: for billing systems that only read Shift_JIS, written as Windows'
  code page 932 (the Shift_JIS every Japanese Windows and Excel uses; it adds NEC and
  IBM extensions such as ①, ㈱ and 髙 to JIS X 0208) with CRLF line ends. A character
  code page 932 cannot hold is an :class:`EncodeError` naming the row and column, never
  a silent ``?``.

Cells are typed so that the XLSX behaves in Excel and the CSV reads the same:

* ``datetime.date`` — a date: ISO text in the CSV, an Excel date (``yyyy-mm-dd``) in
  the XLSX;
* ``datetime.datetime`` (naive, local time) — a moment: ``MM/DD HH:MM`` text, an Excel
  date-time (``mm/dd hh:mm``);
* ``datetime.timedelta`` — a duration: ``H:MM`` text, an Excel time (``[h]:mm``, so a
  sum over a month shows 213:05, not the time of day);
* numbers stay numbers; everything else is text.

Column widths fit the longest cell as Excel shows it, East Asian wide characters
counting two.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

Encoding = Literal["utf-8-sig", "shift_jis"]
CODEC: dict[str, str] = {"utf-8-sig": "utf-8-sig", "shift_jis": "cp932"}


class EncodeError(ValueError):
    """A cell cannot be written in the requested encoding (``row`` 0: the header)."""

    def __init__(self, row: int, key: str, column: str, char: str, encoding: str) -> None:
        where = "header" if row == 0 else f"row {row} ({key})"
        super().__init__(
            f"{where}, column {column}: {char!r} (U+{ord(char[0]):04X}) cannot be "
            f"written in {encoding} (code page 932); use --encoding utf-8-sig "
            "or change the name in the registry"
        )
        self.row, self.key, self.column, self.char = row, key, column, char


DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "mm/dd hh:mm"
DURATION_FORMAT = "[h]:mm"
# a column never grows wider than this (in Excel's character units); longer text wraps
MAX_WIDTH = 80


def duration_text(value: dt.timedelta) -> str:
    m = round(value.total_seconds() / 60)
    return f"{m // 60}:{m % 60:02d}"


def cell_text(value: object) -> str:
    """A cell as the CSV (and the HTML) writes it."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%m/%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return duration_text(value)
    return str(value)


def display_width(text: str) -> int:
    """Columns the text takes in a Japanese font: wide, full-width and ambiguous
    characters (漢字, かな, ①, −) two, others one."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WFA" else 1 for ch in text)


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]], encoding: Encoding) -> bytes:
    codec = CODEC[encoding]
    # Excel on Windows expects CRLF; csv's default line terminator is CRLF already.
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    for n, row in enumerate([header, *rows]):
        cells = [cell_text(v) for v in row]
        for col, cell in enumerate(cells):
            try:
                cell.encode(codec)
            except UnicodeEncodeError as exc:
                bad = cell[exc.start : exc.end]
                raise EncodeError(n, cells[0], header[col], bad, encoding) from None
        writer.writerow(cells)
    return buf.getvalue().encode(codec)


Sheet = tuple[str, Sequence[str], Sequence[Sequence[object]]]


def _xlsx_value(value: object) -> tuple[object, str | None]:
    """The value openpyxl stores and its number format (None: Excel's General)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            raise ValueError(f"{value!r}: Excel has no time zones; pass local time")
        return value, DATETIME_FORMAT
    if isinstance(value, dt.date):
        return value, DATE_FORMAT
    if isinstance(value, dt.timedelta):
        # whole minutes, as the CSV shows them: a sum then equals the sum of the texts
        return dt.timedelta(minutes=round(value.total_seconds() / 60)), DURATION_FORMAT
    return value, None


def xlsx_bytes(sheets: Sequence[Sheet]) -> bytes:
    """One sheet per table: the header on row 1 (bold, frozen, with filters), the rows
    below; dates, times and durations as Excel values with their number format."""
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for title, header, rows in sheets:
        ws = wb.create_sheet(title[:31])  # Excel's limit for sheet names
        ws.append(list(header))
        for cell in ws[1]:
            cell.font = Font(bold=True)
        widths = [display_width(h) for h in header]
        for r, row in enumerate(rows, start=2):
            for c, value in enumerate(row, start=1):
                stored, fmt = _xlsx_value(value)
                cell = ws.cell(row=r, column=c, value=stored)
                if fmt is not None:
                    cell.number_format = fmt
                w = display_width(cell_text(value))
                if w > MAX_WIDTH:
                    cell.alignment = Alignment(wrap_text=True, vertical="top")
                if c > len(widths):
                    widths.append(0)
                widths[c - 1] = max(widths[c - 1], w)
        for c, w in enumerate(widths, start=1):
            # +2: the cell's padding and the filter button beside the header
            ws.column_dimensions[get_column_letter(c)].width = min(w, MAX_WIDTH) + 2
        ws.freeze_panes = "A2"
        if rows:
            ws.auto_filter.ref = ws.dimensions
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_out(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(data)
