"""Away periods (``[rules.away]``): the periods a household said it would be away.

Two features read them: the rules (the watch-over alerts and the no-use notice stay
quiet inside them, docs/rules-water.md) and 検針 (a reading period whose standstill a
registered period covers is flagged 不在届あり, docs/reports.md, "Flags").
Features may not import each other (docs/architecture.md#layers), so the parsing and
validation live here, in the shared configuration layer, once:

```toml
[rules.away]
M003 = [["2026-02-10T09:00:00+09:00", "2026-02-14T18:00:00+09:00"]]
M017 = [["2026-03-01T08:00", "2026-03-05T20:00"]]   # no offset: JST
```

Errors name the field (``rules.away.M003.0.0: Value error, 'tuesday' is not a
date-time …``; ``rules.away: Value error, M003[0]: the start … is not before the
end …``), whichever feature reads the section.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from core.config import Config, validate_section

# The town's clock: a time written without an offset (``2026-02-10T09:00``) is JST,
# whatever timezone the host runs in (docs/rules.md#away-periods).
JST = timezone(timedelta(hours=9), "JST")


def _as_jst(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=JST)


def _parse_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date-time; write e.g. 2026-02-10T09:00:00+09:00 "
                "(without an offset it is read as JST)"
            ) from None
    return value


AwayTime = Annotated[datetime, BeforeValidator(_parse_time), AfterValidator(_as_jst)]
AwaySpans = dict[str, list[tuple[datetime, datetime]]]


def _ordered(value: AwaySpans) -> AwaySpans:
    for meter, spans in value.items():
        for n, (a, b) in enumerate(spans):
            if a >= b:
                raise ValueError(
                    f"{meter}[{n}]: the start {a.isoformat()} is not before the end {b.isoformat()}"
                )
    return value


# meter id → list of [start, end] (ISO strings or TOML date-times; without an offset:
# JST), each start before its end. Meter ids are not checked against the registry.
AwayPeriods = Annotated[dict[str, list[tuple[AwayTime, AwayTime]]], AfterValidator(_ordered)]


class _RulesAway(BaseModel):
    """``[rules]`` as far as ``away`` goes (the rest is the rules' own business)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    away: AwayPeriods = Field(default_factory=dict)


def load_away(cfg: Config) -> AwaySpans:
    """``[rules.away]`` validated, times offset-aware; raise ``ConfigError`` naming the
    field (``rules.away.M003.0.0: …``)."""
    return validate_section("rules", cfg.rules, _RulesAway).away


def away_ms(spans: AwaySpans, meter: str) -> list[tuple[int, int]]:
    """One meter's periods in epoch milliseconds."""
    return [(int(a.timestamp() * 1000), int(b.timestamp() * 1000)) for a, b in spans.get(meter, [])]


__all__ = ["JST", "AwayPeriods", "AwaySpans", "AwayTime", "away_ms", "load_away"]
