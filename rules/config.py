"""``[rules]`` of the config file: schedule, state, thresholds and their overrides.

```toml
[rules]
interval_s = 60
[rules.snow]
dispatch_cm = 10
[rules.overrides.station.ST02.snow]     # scope: station | meter | plow | route | district
priority_station = true
[rules.overrides.district."中町".water]
night_min_lph = 8
```

A subject's parameters are the global ones, then its district's overrides, then its
own (most specific wins). Errors name the field: ``rules.overrides.meter.M003.water.
night_min_lph: Input should be greater than or equal to 0``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.away import AwayPeriods
from core.config import Config, ConfigError, config_path, describe_errors, validate_section
from rules.params import (
    FAMILY_PARAMS,
    PlowParams,
    SnowParams,
    SystemParams,
    WaterParams,
    _Params,
)

Scope = Literal["station", "meter", "plow", "route", "district"]
SCOPES: tuple[Scope, ...] = ("station", "meter", "plow", "route", "district")


class RulesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: Annotated[int, Field(ge=5, le=3600)] = 60
    # Every cycle re-reads this much recent data, so late data (a meter's daily batch
    # of 24 hourly values) is seen: longer than the longest upload interval.
    lookback_h: Annotated[float, Field(ge=1, le=24 * 14)] = 36.0
    # Devices that report as they measure need less: re-reading 36 h of 1 Hz plow
    # positions every minute would cost more than all the rules together.
    lookback_h_by_measurement: dict[str, Annotated[float, Field(gt=0, le=24 * 14)]] = Field(
        default_factory=lambda: {
            "plow_position": 1.0,
            "snow_depth": 6.0,
            "yukimizu_deadletter": 3.0,
            "yukimizu_ingest": 3.0,
        }
    )
    # First start (no state yet): how much history to read to warm up (the 30-night
    # median needs a month). Transitions before "now − lookback" are not emitted.
    warmup_days: Annotated[float, Field(ge=0, le=120)] = 31.0
    # Incremental cycles read what arrived after the last cycle minus this: ingest's
    # delay between receiving a reading and InfluxDB storing it (docs/rules.md#incremental-cycles).
    arrival_slack_s: Annotated[float, Field(ge=0, le=3600)] = 120.0
    # This process's share of the town, "i/n" (docs/scale.md#rules-in-shards); the
    # command line's --shard wins. None: one process evaluates everything.
    shard: Annotated[str, Field(pattern=r"^\d+/\d+$")] | None = None
    state_dir: Path = Path(".yukimizu/rules")
    instance: Annotated[str, Field(min_length=1)] = "rules"
    write_derived: bool = True
    lang: Literal["ja", "en"] = "ja"
    water: WaterParams = Field(default_factory=WaterParams)
    snow: SnowParams = Field(default_factory=SnowParams)
    plow: PlowParams = Field(default_factory=PlowParams)
    system: SystemParams = Field(default_factory=SystemParams)
    # scope → id → family → {param: value}
    overrides: dict[Scope, dict[str, dict[str, dict[str, Any]]]] = Field(default_factory=dict)
    # "away" periods: meter id → list of [start, end] times (ISO strings or TOML
    # date-times; without an offset: JST). Validated here, not when a rule reads them;
    # the parsing is core.away's, which 検針 reads too.
    away: AwayPeriods = Field(default_factory=dict)

    def lookback_ms(self, measurement: str) -> int:
        hours = self.lookback_h_by_measurement.get(measurement, self.lookback_h)
        return int(hours * 3_600_000)

    def family(self, name: str) -> _Params:
        value: _Params = getattr(self, name)
        return value

    def for_subject(self, family: str, scope: Scope, subject: str, district: str | None) -> Any:
        """The parameters of ``family`` for one subject (district, then own overrides)."""
        # Memoised per config object by identity: a RulesConfig holds dicts, so it is not
        # hashable and cannot be a functools.cache key. The entry keeps the config alive,
        # so its id cannot be reused while cached.
        entry = _MERGED.setdefault(id(self), (self, {}))
        key = (family, scope, subject, district)
        params = entry[1].get(key)
        if params is None:
            params = entry[1][key] = _merged(self, family, scope, subject, district)
        return params


_MERGED: dict[int, tuple[RulesConfig, dict[tuple[str, str, str, str | None], _Params]]] = {}


def _merged(
    cfg: RulesConfig, family: str, scope: Scope, subject: str, district: str | None
) -> _Params:
    base = cfg.family(family)
    layers = []
    if district is not None:
        layers.append(cfg.overrides.get("district", {}).get(district, {}).get(family, {}))
    layers.append(cfg.overrides.get(scope, {}).get(subject, {}).get(family, {}))
    layers = [x for x in layers if x]
    if not layers:
        return base
    data = base.model_dump()
    for layer in layers:
        data.update(layer)
    return FAMILY_PARAMS[family].model_validate(data)


def _validate_overrides(cfg: RulesConfig) -> None:
    problems = []
    for scope, ids in cfg.overrides.items():
        for subject, families in ids.items():
            for family, values in families.items():
                where = f"rules.overrides.{scope}.{subject}.{family}"
                model = FAMILY_PARAMS.get(family)
                if model is None:
                    problems.append(
                        f"  {where}: unknown rule family (known: {', '.join(FAMILY_PARAMS)})"
                    )
                    continue
                try:
                    model.model_validate({**cfg.family(family).model_dump(), **values})
                except ValidationError as exc:
                    problems.append(describe_errors(exc, prefix=where))
    if problems:
        raise ConfigError("invalid rules overrides:\n" + "\n".join(problems))


def load_rules_config(cfg: Config) -> RulesConfig:
    """Validate ``[rules]``; raise :class:`ConfigError` naming the field."""
    rc = validate_section("rules", cfg.rules, RulesConfig)
    _validate_overrides(rc)
    return rc.model_copy(update={"state_dir": config_path(cfg, rc.state_dir)})


def params_table() -> list[tuple[str, str, Any, str]]:
    """(family, parameter, default, description) for docs and ``rules params``."""
    rows = []
    for fam, model in FAMILY_PARAMS.items():
        for name, f in model.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            rows.append((fam, name, default, f.description or ""))
    return rows


def with_settings(cfg: Config, sets: Sequence[str] = ()) -> RulesConfig:
    """``[rules]`` with ``--set family.param=value`` settings (values parsed as TOML)."""
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.rules.items()}
    for item in sets:
        key, _, raw = item.partition("=")
        section, _, name = key.strip().rpartition(".")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        target = data
        for part in section.split(".") if section else []:
            target = target.setdefault(part, {})
        target[name] = value
    return load_rules_config(cfg.model_copy(update={"rules": data}))


__all__ = ["SCOPES", "PlowParams", "RulesConfig", "SnowParams", "SystemParams", "WaterParams"]
