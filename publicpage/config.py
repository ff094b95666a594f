"""``[public]`` of the config file: the residents' page.

```toml
[public]
out_dir = "/var/www/yukimizu"        # where `yukimizu public build|run` writes
title = "除雪状況"
stale_after_min = 15                 # older data: a visible notice on the page
interval_s = 60                      # `public run`: one build per interval
tile_url = "https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png"   # "" = no tiles
tile_attribution = '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'
```

Errors name the field the same way ``[rules]`` does (``public.stale_after_min: Input
should be greater than or equal to 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import Config, config_path, validate_section

GSI_PALE = "https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png"
# The GSI terms of use require this credit beside their tiles.
GSI_ATTRIBUTION = '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'


class PublicConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    out_dir: Path = Path(".yukimizu/public")
    title: Annotated[str, Field(min_length=1, max_length=80)] = "除雪状況"
    # Data older than this at build time (or a page older than this in the visitor's
    # browser, if the builder stopped) shows a notice: residents complain about lag
    # (docs/domain.md#public-plowing-maps).
    stale_after_min: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    interval_s: Annotated[int, Field(ge=5, le=3600)] = 60
    tile_url: str = GSI_PALE
    tile_attribution: str = GSI_ATTRIBUTION
    tile_max_zoom: Annotated[int, Field(ge=1, le=22)] = 18
    # Plows: a fix older than this is not shown (ignition off, out of coverage) …
    plow_fix_max_age_min: Annotated[int, Field(ge=1, le=120)] = 10
    # … nor a plow inside the depot radius, or one that has not moved for this long.
    depot_radius_m: Annotated[float, Field(ge=0, le=5000)] = 150.0
    parked_after_min: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    parked_below_kmh: Annotated[float, Field(ge=0, le=20)] = 3.0
    # A dispatch that ended longer ago than this is no longer announced.
    dispatch_shown_h: Annotated[float, Field(gt=0, le=7 * 24)] = 24.0

    @field_validator("tile_url")
    @classmethod
    def _tile_url(cls, v: str) -> str:
        if v and not (v.startswith("https://") or v.startswith("http://") or v.startswith("/")):
            raise ValueError("must be an http(s):// URL template, a /path, or '' for no tiles")
        if v and not all(k in v for k in ("{z}", "{x}", "{y}")):
            raise ValueError("must contain {z}, {x} and {y}")
        return v

    @property
    def stale_after_s(self) -> int:
        return self.stale_after_min * 60


def load_public_config(cfg: Config) -> PublicConfig:
    """Validate ``[public]``; raise :class:`ConfigError` naming the field."""
    pc = validate_section("public", cfg.public, PublicConfig)
    return pc.model_copy(update={"out_dir": config_path(cfg, pc.out_dir)})
