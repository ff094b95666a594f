"""Tables out as CSV (Excel-ready encodings) or XLSX; the same cells either way.

* ``utf-8-sig``: UTF-8 with a byte-order mark — what makes Excel open a UTF-8 CSV as
  UTF-8 instead of the system code page (without it Japanese text is garbled).
* ``shift_jis``: for billing systems that only read Shift_JIS, written as Windows'
  code page 932 (the Shift_JIS every Japanese Windows and Excel uses; it adds NEC and
  IBM extensions such as ①, ㈱ and 髙 to JIS X 0208) with CRLF line ends. A character
  code page 932 cannot hold is an :class:`EncodeError` naming the row and column, never
  a silent ``?``.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from openpyxl import Workbook

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


def _text(value: object) -> str:
    return "" if value is None else str(value)


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]], encoding: Encoding) -> bytes:
    codec = CODEC[encoding]
    # Excel on Windows expects CRLF; csv's default line terminator is CRLF already.
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    for n, row in enumerate([header, *rows]):
        cells = [_text(v) for v in row]
        for col, cell in enumerate(cells):
            try:
                cell.encode(codec)
            except UnicodeEncodeError as exc:
                bad = cell[exc.start : exc.end]
                raise EncodeError(n, cells[0], header[col], bad, encoding) from None
        writer.writerow(cells)
    return buf.getvalue().encode(codec)


Sheet = tuple[str, Sequence[str], Sequence[Sequence[object]]]


def xlsx_bytes(sheets: Sequence[Sheet]) -> bytes:
    """One sheet per table: the header on row 1, the rows below (numbers stay numbers)."""
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for title, header, rows in sheets:
        ws = wb.create_sheet(title[:31])  # Excel's limit for sheet names
        ws.append(list(header))
        for row in rows:
            ws.append(list(row))
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_out(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(data)
