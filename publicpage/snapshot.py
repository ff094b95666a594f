"""What the public page shows at one moment, read from InfluxDB through an allow-list.

Only the measurements and fields in :data:`ALLOWED` can be queried: water meters, the
water_* derived series and alert transitions are not on it, so no household's data can
reach a file residents download (tests/test_public.py proves it with a grep). Every
query is bounded by "as of" time ``at_ms``, so a build for a past moment (``--at``) is
reproducible from the same database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from core.influxql import InfluxQuery
from publicpage.config import PublicConfig
from rules.schema import DISPATCH, RULES_STATS, SEGMENT_ETA, SEGMENT_STATUS, SNOW_HOURLY
from sensors.registry import EARTH_RADIUS_M, Registry
from sensors.schema import PLOW

JST: Final = timezone(timedelta(hours=9), "JST")
HOUR_MS: Final = 3_600_000
MIN_MS: Final = 60_000

# measurement → (tags, fields) that may be read. Nothing else can be queried.
ALLOWED: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    SEGMENT_STATUS: (("segment",), ("plow", "inferred")),
    DISPATCH: (
        ("dispatch_id",),
        (
            "state",
            "started_s",
            "priority_total",
            "priority_done",
            "segments_total",
            "segments_done",
            "progress",
        ),
    ),
    SEGMENT_ETA: (("segment",), ("state", "eta_s", "early_s", "late_s")),
    SNOW_HOURLY: (("device",), ("depth_cm", "new_24h_cm")),
    PLOW: (("device",), ("lat", "lon", "speed_kmh", "blade_down")),
    # The rules engine's heartbeat: only its time is used (data age).
    RULES_STATS: ((), ("cycle_s",)),
}


@dataclass(frozen=True)
class Band:
    key: str
    upto_h: float | None  # None: not plowed within the last 24 h
    label: str
    color: str
    dash: str  # SVG stroke-dasharray; "" = solid


# docs/domain.md#time-since-plowed-bands. Okabe–Ito colours (safe for the common colour
# vision deficiencies), in an order that stays monotone in lightness except yellow,
# plus a dash pattern and a label per band, so colour is never the only cue.
BANDS: Final[tuple[Band, ...]] = (
    Band("lt1h", 1, "1時間以内", "#0072B2", ""),
    Band("1to3h", 3, "1〜3時間前", "#56B4E9", ""),
    Band("3to6h", 6, "3〜6時間前", "#009E73", "14 5"),
    Band("6to12h", 12, "6〜12時間前", "#F0E442", "8 5"),
    Band("12to24h", 24, "12〜24時間前", "#E69F00", "3 5"),
    Band("none", None, "未除雪（24時間以内なし）", "#D55E00", "1 7"),
)
BAND_BY_KEY: Final = {b.key: b for b in BANDS}


def band_for(age_ms: int | None) -> Band:
    """The band of a segment plowed ``age_ms`` ago (None: never, as far as we know)."""
    if age_ms is not None and age_ms >= 0:
        for b in BANDS:
            if b.upto_h is not None and age_ms < b.upto_h * HOUR_MS:
                return b
    return BANDS[-1]


# When will the road be plowed (docs/public.md#eta): the plow ETA's newest point per
# segment, if it is recent; a band in words, never a colour alone.
ETA_FRESH_MS: Final = 20 * MIN_MS  # older segment_eta points are not shown
ETA_SOON_MS: Final = 30 * MIN_MS
ETA_HOUR_MS: Final = 60 * MIN_MS
ETA_KEYS: Final = ("soon", "hour", "later", "unknown")


def _hhmm5(ms: int) -> str:
    """HH:MM rounded to 5 minutes: an estimate, not a timetable."""
    five = 5 * MIN_MS
    return _hhmm((ms + five // 2) // five * five)


def eta_text(state: str, eta_ms: int, early_ms: int, late_ms: int, at_ms: int) -> dict[str, Any]:
    """The words for a segment's ETA: まもなく (within 30 min), 1時間以内, 本日の予定
    HH:MM頃 (another day: M月D日 HH:MM頃の予定), 見込み不明; empty when none applies."""
    none: dict[str, Any] = {"eta": None, "eta_label": "", "eta_range": ""}
    if state == "unknown":
        return {"eta": "unknown", "eta_label": "見込み不明", "eta_range": ""}
    if state != "eta" or eta_ms <= 0:
        return none
    lead = eta_ms - at_ms
    rng = f"{_hhmm5(early_ms)}〜{_hhmm5(late_ms)}"
    if lead <= ETA_SOON_MS:
        return {"eta": "soon", "eta_label": "まもなく", "eta_range": rng}
    if lead <= ETA_HOUR_MS:
        return {"eta": "hour", "eta_label": "1時間以内", "eta_range": rng}
    day = _day_label(eta_ms, at_ms)
    if day == "本日":
        label = f"本日の予定 {_hhmm5(eta_ms)}頃"
    else:
        tomorrow = datetime.fromtimestamp(eta_ms / 1000, JST).date()
        label = f"{tomorrow.month}月{tomorrow.day}日 {_hhmm5(eta_ms)}頃の予定"
    return {"eta": "later", "eta_label": label, "eta_range": rng}


class NotAllowedError(ValueError):
    """A query for a measurement, tag or field that is not on the public allow-list."""


def select(
    measurement: str,
    fields: Sequence[str],
    since_ms: int,
    until_ms: int,
    *,
    group_by: str | None = None,
    newest: bool = True,
    aggregate: str | None = None,
    present: str | None = None,
) -> str:
    """The one way this package builds InfluxQL: only allow-listed names get through."""
    spec = ALLOWED.get(measurement)
    if spec is None:
        raise NotAllowedError(f"measurement {measurement!r} is not public")
    tags, allowed_fields = spec
    bad = [f for f in fields if f not in allowed_fields]
    if bad or not fields:
        raise NotAllowedError(f"fields {bad or fields} of {measurement} are not public")
    if present is not None and present not in fields:
        raise NotAllowedError(f"condition on {present!r}: select it too")
    if group_by is not None and group_by not in tags:
        raise NotAllowedError(f"tag {group_by!r} of {measurement} is not public")
    if aggregate is None:
        cols = ", ".join(f'"{f}"' for f in fields)
    else:
        cols = ", ".join(f'{aggregate}("{f}") AS "{f}"' for f in fields)
    q = f'SELECT {cols} FROM "{measurement}" WHERE time > {since_ms}ms AND time <= {until_ms}ms'
    if present is not None:
        # Only points that carry this (non-negative) field, e.g. an hour with a depth.
        q += f' AND "{present}" >= 0'
    if group_by is not None:
        q += f' GROUP BY "{group_by}"'
    if aggregate is None and newest:
        q += " ORDER BY time DESC LIMIT 1"
    return q


def iso_jst(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, JST).isoformat(timespec="seconds")


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, JST).strftime("%H:%M")


def _day_label(ms: int, at_ms: int) -> str:
    day = datetime.fromtimestamp(ms / 1000, JST).date()
    today = datetime.fromtimestamp(at_ms / 1000, JST).date()
    if day == today:
        return "本日"
    if (today - day).days == 1:
        return "昨日"
    return f"{day.month}月{day.day}日"


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Equirectangular distance: exact enough within a town."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return EARTH_RADIUS_M * math.hypot(x, y)


@dataclass
class Snapshot:
    at_ms: int
    segments: list[dict[str, Any]] = field(default_factory=list)
    plows: list[dict[str, Any]] = field(default_factory=list)
    stations: list[dict[str, Any]] = field(default_factory=list)
    dispatch: dict[str, Any] = field(default_factory=dict)
    data_ms: int | None = None  # newest data the page is built from

    def stale(self, stale_after_s: int) -> bool:
        return self.data_ms is None or self.at_ms - self.data_ms > stale_after_s * 1000


# Segments plowed longer ago than this are "not plowed" anyway; a week bounds the query.
SEGMENT_HISTORY_MS: Final = 7 * 24 * HOUR_MS


class Reader:
    """Reads one snapshot; every query goes through :func:`select`."""

    def __init__(self, client: InfluxQuery, registry: Registry, pcfg: PublicConfig) -> None:
        self.client = client
        self.registry = registry
        self.pcfg = pcfg

    def _rows(self, q: str) -> list[dict[str, Any]]:
        return self.client.rows(q)

    def read(self, at_ms: int) -> Snapshot:
        snap = Snapshot(at_ms)
        newest: list[int] = []
        snap.segments = self._segments(at_ms, newest)
        snap.plows = self._plows(at_ms, newest)
        snap.stations = self._stations(at_ms, newest)
        snap.dispatch = self._dispatch(at_ms, newest)
        beat = self._rows(select(RULES_STATS, ["cycle_s"], at_ms - 24 * HOUR_MS, at_ms))
        newest.extend(int(r["time"]) for r in beat)
        snap.data_ms = max(newest) if newest else None
        return snap

    def _segments(self, at_ms: int, newest: list[int]) -> list[dict[str, Any]]:
        q = select(
            SEGMENT_STATUS,
            ["plow", "inferred"],
            at_ms - SEGMENT_HISTORY_MS,
            at_ms,
            group_by="segment",
        )
        last = {r["segment"]: r for r in self._rows(q)}
        newest.extend(int(r["time"]) for r in last.values())
        eq = select(
            SEGMENT_ETA,
            ["state", "eta_s", "early_s", "late_s"],
            at_ms - ETA_FRESH_MS,
            at_ms,
            group_by="segment",
        )
        etas = {r["segment"]: r for r in self._rows(eq)}
        out = []
        for seg in sorted(self.registry.routes.values(), key=lambda s: (s.priority, s.id)):
            row = last.get(seg.id)
            plowed_ms = int(row["time"]) if row else None
            band = band_for(None if plowed_ms is None else at_ms - plowed_ms)
            out.append(
                {
                    "id": seg.id,
                    "name": seg.name,
                    "priority": seg.priority,
                    "coords": [list(c) for c in seg.coords],
                    "last_plowed": None if plowed_ms is None else iso_jst(plowed_ms),
                    "hours_since": None
                    if plowed_ms is None
                    else round((at_ms - plowed_ms) / HOUR_MS, 2),
                    "inferred": bool(row and row.get("inferred")),
                    "band": band.key,
                    **self._eta(etas.get(seg.id), at_ms),
                }
            )
        return out

    @staticmethod
    def _eta(row: dict[str, Any] | None, at_ms: int) -> dict[str, Any]:
        if row is None:
            return eta_text("", 0, 0, 0, at_ms)
        return eta_text(
            str(row["state"]),
            int(row["eta_s"] or 0) * 1000,
            int(row["early_s"] or 0) * 1000,
            int(row["late_s"] or 0) * 1000,
            at_ms,
        )

    def _plows(self, at_ms: int, newest: list[int]) -> list[dict[str, Any]]:
        p = self.pcfg
        fresh_since = at_ms - p.plow_fix_max_age_min * MIN_MS
        last = self._rows(
            select(
                PLOW,
                ["lat", "lon", "speed_kmh", "blade_down"],
                fresh_since,
                at_ms,
                group_by="device",
            )
        )
        newest.extend(int(r["time"]) for r in last)
        # Moved at all within the parked window? Fastest speed and the box spanned.
        moved_q = select(
            PLOW,
            ["speed_kmh"],
            at_ms - p.parked_after_min * MIN_MS,
            at_ms,
            group_by="device",
            aggregate="max",
        )
        fastest = {r["device"]: r["speed_kmh"] for r in self._rows(moved_q)}
        span_q = select(
            PLOW,
            ["lat", "lon"],
            at_ms - p.parked_after_min * MIN_MS,
            at_ms,
            group_by="device",
            aggregate="spread",
        )
        spans = {r["device"]: r for r in self._rows(span_q)}
        out = []
        for r in sorted(last, key=lambda r: str(r["device"])):
            dev = str(r["device"])
            lat, lon = float(r["lat"]), float(r["lon"])
            depot = self.registry.depot
            if depot is not None and _distance_m(lon, lat, *depot) <= p.depot_radius_m:
                continue  # at the depot: parked by definition
            span = spans.get(dev, {})
            span_m = EARTH_RADIUS_M * math.radians(
                math.hypot(
                    float(span.get("lat") or 0),
                    float(span.get("lon") or 0) * math.cos(math.radians(lat)),
                )
            )
            top = fastest.get(dev)
            if (top is None or float(top) < p.parked_below_kmh) and span_m < 30:
                continue  # standing for parked_after_min: parked, not working
            plow = self.registry.plows.get(dev)
            out.append(
                {
                    "id": dev,
                    "name": plow.name if plow else dev,
                    "lon": lon,
                    "lat": lat,
                    "time": iso_jst(int(r["time"])),
                    "speed_kmh": None if r["speed_kmh"] is None else round(float(r["speed_kmh"])),
                    "blade_down": r["blade_down"],
                }
            )
        return out

    def _stations(self, at_ms: int, newest: list[int]) -> list[dict[str, Any]]:
        # An hourly point is stamped with the hour's start and complete at its end: as of
        # at_ms only hours that ended are shown (a backtest database holds later ones).
        # The snow family also writes hours without a reading (a station silent, new
        # snow over 24 h still rolling): only an hour with a depth is station data.
        q = select(
            SNOW_HOURLY,
            ["depth_cm", "new_24h_cm"],
            at_ms - 24 * HOUR_MS,
            at_ms - HOUR_MS,
            group_by="device",
            present="depth_cm",
        )
        rows = {r["device"]: r for r in self._rows(q)}
        out = []
        for st in sorted(self.registry.stations.values(), key=lambda s: s.id):
            r = rows.get(st.id)
            end_ms = int(r["time"]) + HOUR_MS if r else None
            if end_ms is not None:
                newest.append(end_ms)
            out.append(
                {
                    "id": st.id,
                    "name": st.name,
                    "lon": st.lon,
                    "lat": st.lat,
                    "time": None if end_ms is None else iso_jst(end_ms),
                    "depth_cm": None
                    if r is None or r["depth_cm"] is None
                    else round(float(r["depth_cm"])),
                    "new_24h_cm": None
                    if r is None or r["new_24h_cm"] is None
                    else round(float(r["new_24h_cm"])),
                }
            )
        return out

    def _dispatch(self, at_ms: int, newest: list[int]) -> dict[str, Any]:
        fields = [
            "state",
            "started_s",
            "priority_total",
            "priority_done",
            "segments_total",
            "segments_done",
            "progress",
        ]
        since = at_ms - int(self.pcfg.dispatch_shown_h * HOUR_MS) - 7 * 24 * HOUR_MS
        rows = self._rows(select(DISPATCH, fields, since, at_ms, group_by="dispatch_id"))
        none = {"state": "none", "text": "現在、除雪車は出動していません"}
        if not rows:
            return none
        r = max(rows, key=lambda r: int(r["time"]))
        t = int(r["time"])
        newest.append(t)
        state = str(r["state"])
        if state == "done" and at_ms - t > self.pcfg.dispatch_shown_h * HOUR_MS:
            return none
        started_ms = int(r["started_s"]) * 1000
        head = f"{_day_label(started_ms, at_ms)} {_hhmm(started_ms)} 出動"
        p_done, p_total = int(r["priority_done"] or 0), int(r["priority_total"] or 0)
        if state == "done":
            text = f"{head} — 除雪終了 {_day_label(t, at_ms)} {_hhmm(t)}"
        else:
            text = f"{head} — 優先路線 {p_done}/{p_total} 完了"
        return {
            "state": state,
            "id": str(r["dispatch_id"]),
            "started": iso_jst(started_ms),
            "updated": iso_jst(t),
            "priority_done": p_done,
            "priority_total": p_total,
            "segments_done": int(r["segments_done"] or 0),
            "segments_total": int(r["segments_total"] or 0),
            "text": text,
        }


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
