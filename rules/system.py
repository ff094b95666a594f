"""System rules: a whole kind of device silent, a dead-letter spike, dead letters
evicted from a full store.

A gateway or the broker going down silences every device of a kind at once: that is
one alert (``system.kind_silent``, subject = the kind), which the alerts service uses
to fold the per-device stale/offline alerts behind it (docs/rules.md#system).
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from rules.model import HOUR_MS, MINUTE_MS, Change, Family, Output, hhmm
from rules.params import SystemParams
from rules.transitions import Category, Severity

KIND_MEASUREMENT = {"snow": "snow_depth", "water": "water_meter", "plow": "plow_position"}
KIND_JA = {"snow": "積雪計", "water": "水道メーター", "plow": "除雪車GPS"}
DEADLETTER = "yukimizu_deadletter"
INGEST_STATS = "yukimizu_ingest"


class SystemFamily(Family):
    name: ClassVar[str] = "system"
    category: ClassVar[Category] = "system"
    inputs: ClassVar[dict[str, tuple[str, ...]]] = {
        **{m: () for m in KIND_MEASUREMENT.values()},
        DEADLETTER: ("count",),
        INGEST_STATS: ("deadletter_evicted",),
    }

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.last_arrival: dict[str, int] = {}  # kind → newest arrival (ms)
        self.devices: dict[str, int] = {}  # kind → devices heard of
        # reason → [(time, cumulative count)] over the last hours (per ingest process
        # the counter restarts at 0; a drop is a restart, not negative letters)
        self.dl_last: dict[str, tuple[int, float]] = {}
        self.dl_events: list[tuple[int, float]] = []
        # the same for ingest's cumulative count of evicted dead letters, per client id
        self.ev_last: dict[str, tuple[int, float]] = {}
        self.ev_events: list[tuple[int, float]] = []

    @property
    def p(self) -> SystemParams:
        params: SystemParams = self.config.system
        return params

    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        if measurement == DEADLETTER:
            self._feed_deadletters(frame)
            return
        if measurement == INGEST_STATS:
            self._feed_counter(frame, "deadletter_evicted", self.ev_last, self.ev_events)
            return
        kind = next(k for k, m in KIND_MEASUREMENT.items() if m == measurement)
        newest = int(frame["arrival"].max())
        self.last_arrival[kind] = max(self.last_arrival.get(kind, 0), newest)
        self.devices[kind] = max(self.devices.get(kind, 0), int(frame["device"].nunique()))

    def _feed_deadletters(self, frame: pd.DataFrame) -> None:
        self._feed_counter(frame, "count", self.dl_last, self.dl_events)

    @staticmethod
    def _feed_counter(
        frame: pd.DataFrame,
        field: str,
        last: dict[str, tuple[int, float]],
        events: list[tuple[int, float]],
    ) -> None:
        """A cumulative counter per subject → (time, increase) events. The counter
        restarts at 0 with every ingest process: a drop is a restart."""
        for subject, t, count in zip(frame["device"], frame["time"], frame[field], strict=True):
            if pd.isna(count):
                continue
            prev = last.get(subject)
            c = float(count)
            if prev is not None:
                added = c - prev[1] if c >= prev[1] else c
                if added > 0:
                    events.append((int(t), added))
            last[subject] = (int(t), c)

    def tick(self, now_ms: int, out: Output) -> None:
        for kind, last in self.last_arrival.items():
            minutes = self.p.kind_silent_min.get(kind, 0)
            if minutes <= 0:
                continue
            silent = now_ms - last >= minutes * MINUTE_MS
            at = last + minutes * MINUTE_MS if silent else last
            name = KIND_JA[kind]
            self.finding(
                out,
                "kind",
                Change(
                    rule="system.kind_silent",
                    subject=kind,
                    active=silent,
                    at_ms=at,
                    severity=Severity.WARNING,
                    values={"last_heard": hhmm(last), "minutes": minutes},
                    message=(
                        f"{name}のデータが {minutes} 分以上届いていません"
                        f" (最終受信 {hhmm(last)})。"
                        "ゲートウェイまたはブローカーを確認してください。"
                        if silent
                        else f"{name}のデータ受信が再開しました ({hhmm(last)})。"
                    ),
                    message_en=(
                        f"No {kind} data for {minutes} min (last at {hhmm(last)}): "
                        "check the gateway or the broker."
                        if silent
                        else f"{kind} data is arriving again ({hhmm(last)})."
                    ),
                ),
            )
        self._tick_deadletters(now_ms, out)
        self._tick_evictions(now_ms, out)

    def _tick_deadletters(self, now_ms: int, out: Output) -> None:
        self.dl_events = [(t, n) for t, n in self.dl_events if t > now_ms - HOUR_MS]
        if not self.dl_last:
            return
        per_h = sum(n for _t, n in self.dl_events)
        limit = self.p.deadletter_rate_per_h
        active = per_h > limit
        self.finding(
            out,
            "town",
            Change(
                rule="system.deadletter_spike",
                subject="ingest",
                active=active,
                at_ms=now_ms,
                severity=Severity.INFO,
                values={"per_hour": round(per_h), "limit": limit},
                message=(
                    f"取り込めないメッセージ (デッドレター) が 1 時間に {per_h:.0f} 件"
                    f" (基準 {limit:.0f} 件)。`yukimizu deadletter list` で確認してください。"
                ),
                message_en=(
                    f"{per_h:.0f} dead letters in the last hour (limit {limit:.0f}): "
                    "see `yukimizu deadletter list`."
                ),
            ),
        )

    def _tick_evictions(self, now_ms: int, out: Output) -> None:
        """Ingest evicted dead letters in the last hour: the store is at its cap
        (ingest.deadletter_max_bytes) and evidence is being lost."""
        self.ev_events = [(t, n) for t, n in self.ev_events if t > now_ms - HOUR_MS]
        if not self.ev_last:
            return
        n = sum(k for _t, k in self.ev_events)
        active = n > 0
        self.finding(
            out,
            "town",
            Change(
                rule="system.deadletter_evicted",
                subject="ingest",
                active=active,
                at_ms=max((t for t, _n in self.ev_events), default=now_ms),
                severity=Severity.WARNING,
                values={"evicted_last_hour": round(n)},
                message=(
                    f"デッドレターの保存容量が上限 (ingest.deadletter_max_bytes) に達し、"
                    f"過去 1 時間に古いものから {n:.0f} 件を削除しました。"
                    "`yukimizu deadletter list` で原因を確認し、対処済みのものは purge "
                    "してください。"
                    if active
                    else "デッドレターの削除は止まりました (過去 1 時間に削除なし)。"
                ),
                message_en=(
                    f"The dead-letter store is full (ingest.deadletter_max_bytes): {n:.0f} "
                    "of the oldest dead letters were evicted in the last hour. See "
                    "`yukimizu deadletter list` and purge what is understood."
                    if active
                    else "No dead letters evicted in the last hour."
                ),
            ),
        )
