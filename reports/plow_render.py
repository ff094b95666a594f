"""The plowing report's tables (vehicles, segments, contractors, dispatches) and the
printable A4 HTML page."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

from reports.meter import JST
from reports.plow import Dispatch, Trip

Table = tuple[list[str], list[list[object]]]


def hm(ms: int | None) -> str:
    return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, JST).strftime("%m/%d %H:%M")


def dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m = round(seconds / 60)
    return f"{m // 60}:{m % 60:02d}"


VEHICLE_HEADER = [
    "車両",
    "業者",
    "出動ID",
    "出庫",
    "帰庫",
    "作業時間",
    "除雪時間",
    "回送時間",
    "待機時間",
    "走行km",
    "除雪km",
    "回送km",
    "除雪区間数",
    "除雪区間",
    "GPS点数",
    "GPS期間",
    "除外点数",
]


def vehicles(trips: Sequence[Trip]) -> Table:
    rows: list[list[object]] = [
        [
            tr.plow,
            tr.contractor,
            tr.dispatch_id,
            hm(tr.leave_ms),
            hm(tr.back_ms),
            dur(tr.working_s),
            dur(tr.blade_s),
            dur(tr.travel_s),
            dur(tr.idle_s),
            round(tr.total_km, 2),
            round(tr.blade_km, 2),
            round(tr.travel_km, 2),
            len({s.segment for s in tr.segments}),
            " ".join(dict.fromkeys(s.segment for s in tr.segments)),
            tr.fixes,
            f"{hm(tr.first_fix_ms)}–{hm(tr.last_fix_ms)}",
            tr.dropped,
        ]
        for tr in trips
    ]
    return VEHICLE_HEADER, rows


def segments(trips: Sequence[Trip]) -> Table:
    header = ["車両", "出動ID", "区間", "路線名", "優先度", "除雪時刻", "出典"]
    rows: list[list[object]] = [
        [tr.plow, tr.dispatch_id, s.segment, s.name, s.priority, hm(s.at_ms), s.source]
        for tr in trips
        for s in tr.segments
    ]
    return header, rows


def contractors(trips: Sequence[Trip]) -> Table:
    header = ["業者", "車両数", "作業時間計", "除雪時間計", "待機時間計", "走行km計", "除雪km計"]
    rows: list[list[object]] = []
    for name in sorted({tr.contractor for tr in trips}):
        mine = [tr for tr in trips if tr.contractor == name]
        rows.append(
            [
                name,
                len({tr.plow for tr in mine}),
                dur(sum(tr.working_s for tr in mine)),
                dur(sum(tr.blade_s for tr in mine)),
                dur(sum(tr.idle_s for tr in mine)),
                round(sum(tr.total_km for tr in mine), 2),
                round(sum(tr.blade_km for tr in mine), 2),
            ]
        )
    return header, rows


def dispatches(ds: Sequence[Dispatch]) -> Table:
    header = [
        "出動ID",
        "出動時刻",
        "車両数",
        "優先区間(済/全)",
        "除雪作業時間",
        "走行km計",
        "除雪km計",
        "GPS点数",
    ]
    rows: list[list[object]] = [
        [
            d.id,
            hm(d.start_ms),
            len({tr.plow for tr in d.trips}),
            f"{d.priority_done}/{d.priority_total}",
            dur(d.work_time_s),
            round(sum(tr.total_km for tr in d.trips), 2),
            round(sum(tr.blade_km for tr in d.trips), 2),
            sum(tr.fixes for tr in d.trips),
        ]
        for d in ds
    ]
    return header, rows


def trace_note(trips: Sequence[Trip]) -> str:
    """What the figures rest on: the GPS fixes used and their time span."""
    if not trips:
        return "GPS記録なし"
    n = sum(tr.fixes for tr in trips)
    dropped = sum(tr.dropped for tr in trips)
    a = min(tr.first_fix_ms for tr in trips)
    b = max(tr.last_fix_ms for tr in trips)
    return (
        f"集計根拠: GPS測位 {n:,} 点({hm(a)}–{hm(b)} JST)、"
        f"80 km/h 超の跳びとして除外 {dropped:,} 点"
    )


_CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: "Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic", sans-serif;
       font-size: 9pt; color: #000; }
h1 { font-size: 14pt; margin: 0 0 4mm; }
h2 { font-size: 11pt; margin: 5mm 0 2mm; }
table { border-collapse: collapse; width: 100%; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 0.3mm solid #444; padding: 0.8mm 1.2mm; }
th { background: #eee; }
td.n { text-align: right; }
p.note { font-size: 8pt; }
"""


def _table(t: Table) -> str:
    header, rows = t
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def daily_html(day: dt.date, trips: Sequence[Trip], ds: Sequence[Dispatch], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>作業日: {day.isoformat()}(出動開始日。日付をまたぐ作業は出動した日に計上)</p>",
        "<h2>車両別</h2>",
        _table(vehicles(trips)),
        "<h2>業者別集計</h2>",
        _table(contractors(trips)),
        "<h2>出動</h2>",
        _table(dispatches(ds)),
        "<h2>除雪区間</h2>",
        _table(segments(trips)),
        f'<p class="note">{html.escape(trace_note(trips))}。'
        "待機: 車庫外で 3 km/h 未満が 10 分超。回送時間 = 作業時間 − 除雪時間 − 待機時間。</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
