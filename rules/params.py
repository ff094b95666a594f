"""Every threshold of every rule, with its default and where the default comes from.

Configured under ``[rules.<family>]`` and overridable per station, meter, plow,
route segment or district under ``[rules.overrides.<scope>.<id>.<family>]``
(``rules/config.py``). The sources behind the defaults: docs/domain.md (anchors
cited per field) and docs/rules.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sensors.models import QUALITY_POOR_BELOW

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, le=1)]
Hours = Annotated[float, Field(gt=0, le=24 * 60)]


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WaterParams(_Params):
    # docs/domain.md#continuous-flow-leak: no hour with zero use in the last 24 h
    # (Kamstrup); a leak of 12.5 L/h must be caught.
    leak_window_h: Annotated[int, Field(ge=6, le=168)] = 24
    leak_zero_hour_l: NonNeg = 1.0  # an hour using at most this much counts as "zero"
    leak_min_lph: NonNeg = 5.0  # ...and the smallest hour must exceed this to call a leak
    leak_clear_zero_hours: Annotated[int, Field(ge=1, le=48)] = 1  # clears after 1 h of zero
    # Readings lost on the radio: a gap of up to this many hours whose mean flow is above
    # leak_min_lph continues a leak's run instead of restarting it (1 = no bridging).
    leak_bridge_gap_h: Annotated[float, Field(ge=1, le=6)] = 3.0
    # docs/domain.md#continuous-flow-leak: Kamstrup's constant-flow threshold spans
    # 0.1–2 % of Q3; a leak whose smallest hour reaches 2 % of a 13 mm meter's Q3
    # (50 L/h) is a warning, smaller ones go to the morning digest (info).
    leak_warning_lph: NonNeg = 50.0
    # docs/domain.md#minimum-night-flow: lowest hourly flow 02:00–05:00 above
    # max(5 L/h, 2 × 30-night median) three nights running, evaluated at 07:00.
    night_start_hour: Annotated[int, Field(ge=0, le=23)] = 2
    night_end_hour: Annotated[int, Field(ge=1, le=24)] = 5
    night_evaluate_hour: Annotated[int, Field(ge=0, le=23)] = 7
    night_min_lph: NonNeg = 5.0
    night_median_factor: Pos = 2.0
    night_median_nights: Annotated[int, Field(ge=3, le=90)] = 30
    night_consecutive: Annotated[int, Field(ge=1, le=14)] = 3
    # docs/domain.md#burst: above 20 % of Q3 for 30 min (Kamstrup flowIQ 3100); with
    # hourly registers, the hourly equivalent.
    burst_q3_share: Share = 0.2
    burst_min_minutes: Annotated[int, Field(ge=1, le=600)] = 30
    # docs/domain.md#reverse-flow: register running backwards (Sensus: 15 min)
    reverse_min_l: NonNeg = 2.0
    # a backwards step larger than this share of the register is a meter swap
    swap_min_drop_share: Share = 0.5
    # docs/domain.md#stale-meter: no upload past the expected interval
    stale_hourly_h: Hours = 3.0
    stale_daily_h: Hours = 26.0
    # docs/domain.md#stuck-meter: zero use for days where use is normal
    stuck_days: Annotated[int, Field(ge=1, le=60)] = 3
    stuck_normal_lpd: NonNeg = 50.0  # "normal use": 30-day median daily use above this
    # docs/domain.md#watch-over: 見守り for flagged households. No use for this many
    # whole hours running (night hours count). A silence of 24 h must be found while it
    # is still silent: the last use is known to the hour, so 23 h after the end of its
    # hour is at most 24 h after it. An ordinary day out with a dry evening and night
    # after it comes close (22 h: 1.7 false per 30 watched home-months on the battery's
    # tuning seed, 23 h: 1.0); docs/rules-water.md#battery-scoring.
    watch_no_use_h: Annotated[int, Field(ge=1, le=72)] = 23
    watch_continuous_h: Annotated[int, Field(ge=1, le=48)] = 2
    # With hourly registers "continuous" means every hour of the run at least what a
    # tap left open runs at its lowest usual setting (~4 L/min): lower hourly totals over
    # two hours are ordinary bathing and laundry in an elderly household.
    watch_continuous_min_lph: NonNeg = 240.0


class SnowParams(_Params):
    # docs/domain.md#echo-quality: readings with a quality code below this are a poor
    # echo, not used while good ones are enough (the vendor figure, sensors.models;
    # overridable per sensor type or station)
    quality_poor_below: Annotated[int, Field(ge=0, le=255)] = QUALITY_POOR_BELOW
    # docs/rules-snow.md#new-snow: an hour with fewer good readings than this takes the
    # poor-echo readings of the level window too, with their wider error
    poor_echo_fallback_readings: Annotated[int, Field(ge=0, le=60)] = 3
    # …and any hour takes them when they scatter no more than this many times the good
    # ones (or the sensor's stated noise): falling snow widens every reading's scatter
    # alike (docs/domain.md#echo-loss-in-snowfall); a failing transducer's far more
    poor_echo_merge_ratio: Annotated[float, Field(ge=0, le=10)] = 2.0
    poor_echo_share: Share = 0.5  # share of poor-echo readings in the last hour: a fault
    poor_echo_min: Annotated[int, Field(ge=0, le=600)] = 60  # …held this long
    # …unless this share of the stations of the same sensor type is poor too: falling snow
    # scatters ultrasound everywhere at once (weather, not a fault); docs/rules-snow.md#faults
    poor_echo_common_share: Share = 0.5
    # docs/domain.md#spike-filter: a jump larger than spike_cm within spike_window_min is a
    # spike unless a neighbour within spike_neighbour_km agrees…
    spike_cm: Pos = 10.0
    spike_window_min: Annotated[int, Field(ge=1, le=120)] = 10
    spike_neighbour_km: Pos = 3.0
    # …or the new level holds for this many readings (a real step: snow sliding off the
    # mount, a freeze ending with the snow that fell meanwhile); docs/rules-snow.md#cleaning
    spike_confirm_readings: Annotated[int, Field(ge=2, le=20)] = 3
    # docs/rules-snow.md#faults: a frozen sensor repeats its raw figure exactly (2 h at 10 min)
    frozen_readings: Annotated[int, Field(ge=3, le=1000)] = 12
    # docs/rules-snow.md#faults: a raw figure repeated exactly this many times is not
    # used for the level even before the frozen fault is reported (0: used until then)
    frozen_suspect_readings: Annotated[int, Field(ge=0, le=1000)] = 3
    low_battery_v: Pos = 3.3  # scenarios/README.md: the station's own alarm threshold
    battery_hysteresis_v: NonNeg = 0.05  # clears only above low_battery_v + this
    offline_min: Annotated[int, Field(ge=5, le=10_000)] = 60
    # docs/domain.md#hourly-new-snow: JMA hourly new snow with a 1 cm deadband
    deadband_cm: NonNeg = 1.0
    # docs/domain.md#sensor-noise: ±3 cm ultrasonic, ±1 cm laser (read as ±2 σ); only the
    # start-up prior, the station's own noise is measured from its readings
    noise_ultrasonic_cm: Pos = 3.0
    noise_laser_cm: Pos = 1.0
    # docs/rules-snow.md#new-snow: the hysteresis half-width in standard errors of the
    # hourly level (at least deadband_cm), and the readings the level is fitted to
    hysteresis_z: Pos = 2.5
    level_window_h: Annotated[float, Field(ge=0.5, le=6)] = 2.0
    # …but only the hour itself for a station whose usual reading noise is at most this
    # (a laser): docs/rules-snow.md#new-snow
    quiet_sigma_cm: NonNeg = 0.6
    # docs/rules-snow.md#new-snow (Dispatch figure): a station's dispatch figure adds the
    # rise above the reference not yet counted, less this share of the margin
    pending_margin: Annotated[float, Field(ge=0, le=1)] = 0.1
    # docs/rules-snow.md#new-snow: the hourly level from a line through the window, or
    # from a depth-and-rate track of every reading weighted by its scatter
    level_filter: Literal["line", "track"] = "track"
    # docs/rules-snow.md#new-snow: below the reference with no snow counted, the
    # reference moves this share of the way down to the level each hour (settling)
    settle_follow: Annotated[float, Field(ge=0, le=1)] = 0.1
    track_rate_q: NonNeg = 4.0  # how fast the snowfall rate may change, (cm/h)² per hour
    track_depth_q: NonNeg = 0.1  # depth wander beyond the rate (settling), cm² per hour
    track_gate: Pos = 4.0  # a reading this many σ off the track is not used
    # docs/rules-snow.md#new-snow (Dispatch figure): the depth an accumulation starts
    # from at a plowing is re-read with the track's next hours, this many (0: as seen)
    baseline_smooth_h: NonNeg = 3.0
    # docs/rules-snow.md#snowdispatch (Event time): how long a silent station's hour
    # waits for a reading still due in it
    hour_grace_min: Annotated[int, Field(ge=0, le=60)] = 15
    # docs/domain.md#dispatch-threshold, #priority-routes, #staged-call-out,
    # #town-wide-alert, #hold-back
    dispatch_cm: Pos = 10.0
    dispatch_stations: Annotated[int, Field(ge=1, le=100)] = 2
    priority_dispatch_cm: Pos = 5.0  # stations tagged as on priority routes (per station)
    priority_station: bool = False
    stages_cm: tuple[float, ...] = (10.0, 30.0, 40.0)
    # docs/domain.md#town-wide-alert: a neighbouring city alerts at 60 cm; in a heavy-snow
    # town 60–120 cm lie all winter, so the default is a depth that is not routine here.
    town_alert_depth_cm: Pos = 150.0
    town_alert_stations: Annotated[int, Field(ge=1, le=100)] = 2
    window_h: Annotated[int, Field(ge=1, le=72)] = 24  # "since last plowing", at most this long
    # docs/rules-snow.md#snowdispatch: an active call holds while enough figures stay within
    # this of the threshold (one call per accumulation; plowing still ends it)
    resolve_margin_cm: NonNeg = 3.0
    # docs/rules-snow.md#snowdispatch_uncertain: a station is blind after blind_min without
    # a reading, with blind_poor_share of the last hour's echoes poor, or frozen, and sees
    # again below blind_clear_share (hysteresis); it matters while its figure is below its
    # threshold and could reach it at a plausible rate within the time it has been blind
    # plus uncertain_lookahead_h; after a warning ends, a new one waits uncertain_refire_min
    blind_min: Annotated[int, Field(ge=10, le=600)] = 30
    blind_poor_share: Share = 0.8
    blind_clear_share: Share = 0.5
    uncertain_lookahead_h: NonNeg = 1.0
    # docs/rules-snow.md#blind-stations: an hour a station cannot see (no level) carries
    # its figure on at blind_trend_factor × the rate it last saw, for at most this many
    # hours (0: the last figure stands)
    blind_trend_h: Annotated[float, Field(ge=0, le=6)] = 3.0
    blind_trend_factor: Annotated[float, Field(ge=0, le=1)] = 1.0
    # an active call counts stations within resolve_margin_cm of the threshold for at
    # most this long after it began (0: until plowing)
    resolve_hold_h: Annotated[float, Field(ge=0, le=48)] = 6.0
    uncertain_refire_min: Annotated[int, Field(ge=0, le=1440)] = 120
    holdback_temp_c: float = 2.0


class PlowParams(_Params):
    # docs/domain.md#segment-plowed, #blade-down-distance, #inferred-status, #idle
    cover_radius_m: Pos = 15.0
    cover_share: Share = 0.8
    pass_window_min: Annotated[int, Field(ge=1, le=600)] = 60
    sample_step_m: Pos = 5.0
    max_speed_kmh: Pos = 80.0  # a jump implying more is a bad fix (docs/domain.md#fix-filter)
    inferred_min_kmh: NonNeg = 5.0
    inferred_max_kmh: Pos = 40.0
    idle_kmh: Pos = 3.0
    idle_min: Annotated[int, Field(ge=1, le=600)] = 10
    silent_min: Annotated[int, Field(ge=1, le=600)] = 15  # no fix during an active dispatch
    depot_radius_m: Pos = 150.0
    dispatch_gap_min: Annotated[int, Field(ge=10, le=24 * 60)] = 120  # quiet time ending one
    max_gap_s: Annotated[int, Field(ge=1, le=3600)] = 120  # longer gaps break a track
    # docs/domain.md#fix-filter: GPS horizontal error allowed on top of max_speed_kmh, so
    # two honest fixes 1 s apart at 50 km/h (14 m) with ±5 m noise are not a "jump".
    fix_noise_m: NonNeg = 10.0
    # docs/domain.md#daily-plowing-report: all working plows back at the depot (or
    # silent) this long ends the dispatch (its end time is the last return, not this).
    dispatch_end_min: Annotated[int, Field(ge=1, le=600)] = 15


class SystemParams(_Params):
    # a whole kind silent (gateway or broker down): one alert, not thirty
    kind_silent_min: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: {"snow": 60, "water": 26 * 60, "plow": 0}
    )
    deadletter_rate_per_h: NonNeg = 100.0


FAMILY_PARAMS: dict[str, type[_Params]] = {
    "water": WaterParams,
    "snow": SnowParams,
    "plow": PlowParams,
    "system": SystemParams,
}
