"""Configuration: one TOML file, environment overrides, validated at start-up.

Environment variables ``YUKIMIZU_<SECTION>__<KEY>`` override the file, e.g.
``YUKIMIZU_MQTT__PORT=1884`` or ``YUKIMIZU_INFLUX__PASSWORD=...``. Values from the
environment are parsed as TOML values when they parse (numbers, booleans, arrays),
and taken as plain strings otherwise.

Relative paths in the file are resolved against the file's own directory, so the
same config works whatever directory ingest is started from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from sensors.models import ALARM_FLAGS, PAYLOAD_FIELDS
from sensors.registry import BBox, Registry

ENV_PREFIX = "YUKIMIZU_"


class ConfigError(ValueError):
    """A configuration problem, with the offending field named."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=128)] = "yukimizu-ingest"
    username: str | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None
    topic_prefix: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] = "yukimizu"
    lorawan_topics: list[str] = Field(
        default_factory=lambda: ["application/+/device/+/event/up", "v3/+/devices/+/up"]
    )
    shared_group: Annotated[str, Field(pattern=r"^[^/#+]*$")] = ""
    qos: Literal[1, 2] = 1
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 10_000
    session_expiry_s: Annotated[int, Field(ge=0, le=4_294_967_295)] = 7 * 24 * 3600
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    # Faster receive path around paho's internals (see core/mqtt.py); switch off
    # if a paho upgrade misbehaves.
    paho_fast_path: bool = True


class InfluxConfig(_Section):
    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    # v1 /write
    database: str = "yukimizu"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    create_database: bool = True
    # v2 /api/v2/write
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _v2_needs_bucket(self) -> InfluxConfig:
        if self.api == "v2":
            missing = [k for k in ("org", "bucket", "token") if getattr(self, k) in (None, "")]
            if missing:
                raise ValueError(f"api = 'v2' requires {', '.join(missing)}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self


class IngestConfig(_Section):
    state_dir: Path = Path(".yukimizu/state")
    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 5_000
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    linger_s: Annotated[float, Field(ge=0, le=10)] = 0.05
    max_payload_bytes: Annotated[int, Field(ge=64, le=16 * 1024 * 1024)] = 64 * 1024
    max_future_s: Annotated[float, Field(ge=0)] = 300.0
    metrics_interval_s: Annotated[float, Field(gt=0)] = 10.0
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    spool_max_bytes: Annotated[int, Field(ge=1024)] = 1024**3
    spool_warn_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.7
    # Dead-letter store (docs/delivery.md#dead-letter-store-limits): payloads larger
    # than deadletter_keep_payload_bytes keep only their first 4 KiB, size and
    # sha256; the store is capped at deadletter_max_bytes, the oldest evicted first.
    deadletter_keep_payload_bytes: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = 64 * 1024
    deadletter_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024
    retry_interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    # A site's LoRaWAN codec field names → yukimizu's, e.g. {temperature_c = "air_temp_c"}
    lorawan_aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aliases_known(self) -> IngestConfig:
        bad = {
            k: v
            for k, v in self.lorawan_aliases.items()
            if v not in PAYLOAD_FIELDS and v not in ALARM_FLAGS
        }
        if bad:
            raise ValueError(
                f"lorawan_aliases maps to unknown fields {bad}; known: "
                f"{', '.join(sorted(PAYLOAD_FIELDS | set(ALARM_FLAGS)))}"
            )
        return self


class RegistryConfig(_Section):
    stations: Path = Path("stations.csv")
    meters: Path = Path("meters.csv")
    plows: Path = Path("plows.csv")
    routes: Path | None = Path("routes.geojson")
    # Town bounding box: plow positions outside it are rejected as GPS errors.
    lat_min: Annotated[float, Field(ge=-90, le=90)] = 38.355
    lat_max: Annotated[float, Field(ge=-90, le=90)] = 38.405
    lon_min: Annotated[float, Field(ge=-180, le=180)] = 140.165
    lon_max: Annotated[float, Field(ge=-180, le=180)] = 140.235

    @model_validator(mode="after")
    def _bbox(self) -> RegistryConfig:
        if self.lat_min >= self.lat_max or self.lon_min >= self.lon_max:
            raise ValueError("bounding box is empty: need lat_min < lat_max and lon_min < lon_max")
        return self


class ServicesConfig(_Section):
    """Private local services started by ``yukimizu services up``."""

    data_dir: Path = Path(".yukimizu/services")
    mqtt_port: Annotated[int, Field(ge=1, le=65535)] = 1883
    influx_port: Annotated[int, Field(ge=1, le=65535)] = 8086
    vm_port: Annotated[int, Field(ge=0, le=65535)] = 0


class Config(_Section):
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    influx: InfluxConfig = Field(default_factory=InfluxConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    # Feature sections validated by their own packages (rules/config.py, alerts/config.py),
    # with errors naming the field the same way (``rules.snow.dispatch_cm: …``).
    rules: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    public: dict[str, Any] = Field(default_factory=dict)
    reports: dict[str, Any] = Field(default_factory=dict)
    provision: dict[str, Any] = Field(default_factory=dict)
    # The directory relative paths are resolved against (the config file's); set by
    # load_config, not meant for the file.
    base_dir: Path = Path()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # docs/architecture.md#mqtt (measured): with fewer unacked messages allowed than one
        # batch holds, the broker stops sending before the batch fills.
        if self.mqtt.receive_maximum <= self.ingest.batch_size:
            raise ValueError(
                f"mqtt.receive_maximum ({self.mqtt.receive_maximum}) must exceed "
                f"ingest.batch_size ({self.ingest.batch_size})"
            )
        return self


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section.lower(), {})[key.lower()] = value
    return out


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    reg = cfg.registry
    return cfg.model_copy(
        update={
            "base_dir": base,
            "ingest": cfg.ingest.model_copy(update={"state_dir": fix(cfg.ingest.state_dir)}),
            "registry": reg.model_copy(
                update={
                    "stations": fix(reg.stations),
                    "meters": fix(reg.meters),
                    "plows": fix(reg.plows),
                    "routes": fix(reg.routes),
                }
            ),
            "services": cfg.services.model_copy(update={"data_dir": fix(cfg.services.data_dir)}),
            "mqtt": cfg.mqtt.model_copy(update={"tls_ca_file": fix(cfg.mqtt.tls_ca_file)}),
        }
    )


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, ``  section.key: what is wrong``, for TOML files."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "timezone_aware":
            msg = "needs a UTC offset, e.g. 2026-01-15T03:00:00+09:00"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def read_toml(path: Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """Parse a TOML file, raising ``error`` with a message naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} file {path} is not valid TOML: {exc}") from None


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load, override and validate. Raises :class:`ConfigError` naming the field."""
    data: dict[str, Any] = {}
    source = "defaults"
    base = Path.cwd()
    if path is not None:
        source = str(path)
        data = read_toml(path, "config", ConfigError)
        base = path.resolve().parent
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        current = data.get(section)
        if current is None:
            data[section] = values
        elif isinstance(current, dict):
            current.update(values)
        source += f" + {ENV_PREFIX}{section.upper()}__*"
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {source}:\n{describe_errors(exc)}") from None
    return _resolve_paths(cfg, base)


DEFAULT_CONFIG = Path("config/yukimizu.toml")


def resolve_config(path: Path | None) -> Config:
    """The config from ``path``, else ``$YUKIMIZU_CONFIG``, else ``config/yukimizu.toml``."""
    if path is None:
        env = os.environ.get("YUKIMIZU_CONFIG")
        if env:
            path = Path(env)
        elif DEFAULT_CONFIG.exists():
            path = DEFAULT_CONFIG
    return load_config(path)


def load_registry(cfg: Config) -> Registry:
    """The device registry the config points at (raises ``RegistryError``)."""
    r = cfg.registry
    bbox = BBox(lat_min=r.lat_min, lat_max=r.lat_max, lon_min=r.lon_min, lon_max=r.lon_max)
    return Registry.load(r.stations, r.meters, r.plows, r.routes, bbox=bbox)


_M = TypeVar("_M", bound=BaseModel)


def validate_section(section: str, data: Any, model: type[_M]) -> _M:
    """A feature's ``[section]`` (validated by the feature's own model); raise
    :class:`ConfigError` naming the field, e.g. ``rules.snow.dispatch_cm: …``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration [{section}]:\n{describe_errors(exc, prefix=section)}"
        ) from None


def config_path(cfg: Config, path: Path) -> Path:
    """A path from the config file: ``~`` expanded, relative to the file's directory."""
    path = path.expanduser()
    return path if path.is_absolute() else (cfg.base_dir / path).resolve()
