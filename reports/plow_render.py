"""The plowing report's tables (vehicles, segments, contractors, dispatches) and the
printable A4 HTML page."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

from reports.meter import JST
from reports.output import cell_text
from reports.plow import Dispatch, Trip

Table = tuple[list[str], list[list[object]]]


# what the 出典 column says: where a segment's plowed time comes from
SOURCE_LABEL = {"segment_status": "除雪判定記録", "gps": "GPS軌跡から算出"}


def at(ms: int | None) -> dt.datetime | None:
    """A moment as local (JST) time without a zone: what Excel stores and shows."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, JST).replace(tzinfo=None)


def hm(ms: int | None) -> str:
    return "" if ms is None else cell_text(at(ms))


def dur(seconds: float | None) -> dt.timedelta | None:
    return None if seconds is None else dt.timedelta(seconds=seconds)


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
    "GPS開始",
    "GPS終了",
    "除外点数",
]


def vehicles(trips: Sequence[Trip]) -> Table:
    rows: list[list[object]] = [
        [
            tr.plow,
            tr.contractor,
            tr.dispatch_id,
            at(tr.leave_ms),
            at(tr.back_ms),
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
            at(tr.first_fix_ms),
            at(tr.last_fix_ms),
            tr.dropped,
        ]
        for tr in trips
    ]
    return VEHICLE_HEADER, rows


def segments(trips: Sequence[Trip]) -> Table:
    header = ["車両", "出動ID", "区間", "路線名", "優先度", "除雪時刻", "出典"]
    rows: list[list[object]] = [
        [
            tr.plow,
            tr.dispatch_id,
            s.segment,
            s.name,
            s.priority,
            at(s.at_ms),
            SOURCE_LABEL.get(s.source, s.source),
        ]
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
            at(d.start_ms),
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
        f"集計根拠: GPS測位 {n:,} 点({hm(a)}–{hm(b)} 日本時間)、"
        f"80 km/h 超の跳びとして除外 {dropped:,} 点"
    )


def _clock(ms: int, day: dt.date) -> str:
    """HH:MM on the report's day; another day's moment with its date (MM/DD HH:MM)."""
    when = at(ms)
    assert when is not None
    return when.strftime("%H:%M" if when.date() == day else "%m/%d %H:%M")


def vehicles_print(trips: Sequence[Trip], day: dt.date) -> Table:
    """The vehicle table for the printed page: times of day, the GPS span in one
    column; the segments are in their own table."""
    # The office file's columns up to 回送km, then the print's shorter ones.
    header = [
        *VEHICLE_HEADER[: VEHICLE_HEADER.index("回送km") + 1],
        "区間数",
        "GPS点数",
        "GPS期間",
        "除外点",
    ]
    rows: list[list[object]] = [
        [
            tr.plow,
            tr.contractor,
            tr.dispatch_id,
            _clock(tr.leave_ms, day),
            _clock(tr.back_ms, day),
            dur(tr.working_s),
            dur(tr.blade_s),
            dur(tr.travel_s),
            dur(tr.idle_s),
            round(tr.total_km, 2),
            round(tr.blade_km, 2),
            round(tr.travel_km, 2),
            len({s.segment for s in tr.segments}),
            tr.fixes,
            f"{_clock(tr.first_fix_ms, day)}–{_clock(tr.last_fix_ms, day)}",
            tr.dropped,
        ]
        for tr in trips
    ]
    return header, rows


def segments_print(trips: Sequence[Trip], day: dt.date) -> tuple[Table, str]:
    """The segments plowed, in time order, and where their times come from."""
    passes = sorted(((s, tr) for tr in trips for s in tr.segments), key=lambda p: p[0].at_ms)
    header = ["除雪時刻", "車両", "区間", "路線名", "優先度"]
    rows: list[list[object]] = [
        [_clock(s.at_ms, day), tr.plow, s.segment, s.name, s.priority] for s, tr in passes
    ]
    sources = sorted({SOURCE_LABEL.get(s.source, s.source) for s, _ in passes})
    return (header, rows), "・".join(sources)


_CSS = """
@page { size: A4 portrait; margin: 10mm; }
body { font-family: "Noto Sans CJK JP", "IPAGothic", "IPAexGothic", "Hiragino Sans",
       "Yu Gothic", "Meiryo", sans-serif; font-size: 8pt; color: #000; margin: 0; }
h1 { font-size: 13pt; margin: 0 0 2mm; }
h2 { font-size: 9.5pt; margin: 3mm 0 1mm; }
p { margin: 1mm 0; }
table { border-collapse: collapse; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 0.25mm solid #444; padding: 0.4mm 0.7mm; white-space: nowrap; }
/* nothing wraps: a contractor's name or a vehicle id stays on one line */
th { background: #eee; font-weight: bold; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.side { display: flex; flex-wrap: wrap; gap: 0 4mm; align-items: flex-start; }
.cols { display: flex; gap: 3mm; align-items: flex-start; }
p.note { font-size: 8pt; }
"""


def _table(t: Table) -> str:
    header, rows = t
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(cell_text(v))}</td>'
            if isinstance(v, int | float | dt.timedelta)
            else f"<td>{html.escape(cell_text(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _columns(t: Table, n: int) -> str:
    """A long table as ``n`` tables side by side (newspaper columns), each with the
    header: the segments of a morning fit beside each other instead of over pages."""
    header, rows = t
    per = max(-(-len(rows) // n), 1)
    parts = [_table((header, rows[i : i + per])) for i in range(0, max(len(rows), 1), per)]
    return '<div class="cols">' + "".join(parts) + "</div>"


def daily_html(day: dt.date, trips: Sequence[Trip], ds: Sequence[Dispatch], title: str) -> str:
    seg_table, sources = segments_print(trips, day)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>作業日: {day.isoformat()}(出動開始日。日付をまたぐ作業は出動した日に計上)。"
        "時刻は日本時間、作業日以外の日付には月/日を付記。</p>",
        "<h2>車両別</h2>",
        _table(vehicles_print(trips, day)),
        '<div class="side"><div>',
        "<h2>業者別集計</h2>",
        _table(contractors(trips)),
        "</div><div>",
        "<h2>出動</h2>",
        _table(dispatches(ds)),
        "</div></div>",
        f"<h2>除雪区間({len(seg_table[1])} 件、時刻順)</h2>",
        _columns(seg_table, 3),
        f'<p class="note">除雪時刻の出典: {html.escape(sources or "なし")}。'
        f"{html.escape(trace_note(trips))}。"
        "待機: 車庫外で 3 km/h 未満が 10 分超。回送時間 = 作業時間 − 除雪時間 − 待機時間。</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
