"""``[public]`` of the config file: the residents' page.

```toml
[public]
out_dir = "/var/www/yukimizu"        # where `yukimizu public build|run` writes
title = "除雪状況"
stale_after_min = 15                 # older data: a visible notice on the page
interval_s = 60                      # `public run`: one build per interval
tile_url = "https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png"   # "" = no tiles
tile_attribution = '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'

[public.push]                        # Web Push "tell me when my road is done" (optional)
vapid_key_file = "/etc/yukimizu/vapid_private.pem"   # unset: no push
subject = "mailto:josetsu@town.example.jp"           # the push services' contact for us
season_end = "04-30"                 # subscriptions expire at the end of this day (JST)
```

Errors name the field the same way ``[rules]`` does (``public.stale_after_min: Input
should be greater than or equal to 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.config import Config, ConfigError, config_path, validate_section

GSI_PALE = "https://cyberjapandata.gsi.go.jp/xyz/pale/{z}/{x}/{y}.png"
# The GSI terms of use require this credit beside their tiles.
GSI_ATTRIBUTION = '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'


# Hosts of the browsers' push services (a subdomain of one counts): Chrome/Edge/
# Android (FCM), Firefox (Mozilla autopush), Safari (Apple), Edge legacy (WNS).
PUSH_SERVICES = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
)


class PushConfig(BaseModel):
    """``[public.push]`` (docs/public.md#web-push)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vapid_key_file: Path | None = None  # PEM, P-256 private key (`vapid --gen`)
    subject: str = ""  # mailto: or https: contact sent in the VAPID claims (RFC 8292 §2.1)
    store: Path = Path(".yukimizu/push.sqlite")
    season_end: Annotated[str, Field(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")] = (
        "04-30"
    )
    services: tuple[str, ...] = PUSH_SERVICES
    max_subscriptions: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000
    max_segments: Annotated[int, Field(ge=1, le=100)] = 10
    # New subscriptions per minute for the whole server (a token bucket with this burst)
    subscribe_per_min: Annotated[int, Field(ge=1, le=100_000)] = 120
    max_body_bytes: Annotated[int, Field(ge=512, le=65536)] = 4096
    ttl_s: Annotated[int, Field(ge=60, le=24 * 3600)] = 6 * 3600  # a stale notice is noise
    max_sends_per_run: Annotated[int, Field(ge=1, le=100_000)] = 2000
    drop_after_failures: Annotated[int, Field(ge=1, le=1000)] = 20
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0

    @property
    def enabled(self) -> bool:
        return self.vapid_key_file is not None

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        if v and not (v.startswith("mailto:") or v.startswith("https://")):
            raise ValueError("must be a mailto: or https:// contact (RFC 8292)")
        return v


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
    push: PushConfig = PushConfig()

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
    if pc.push.enabled and not pc.push.subject:
        raise ConfigError("public.push.subject: required with vapid_key_file (RFC 8292)")
    push = pc.push.model_copy(
        update={
            "store": config_path(cfg, pc.push.store),
            "vapid_key_file": None
            if pc.push.vapid_key_file is None
            else config_path(cfg, pc.push.vapid_key_file),
        }
    )
    return pc.model_copy(update={"out_dir": config_path(cfg, pc.out_dir), "push": push})
