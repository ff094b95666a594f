"""``[alerts]`` of the config file: receivers, routes, rotas, escalation, silencing rules.

Validated here with frozen pydantic models; errors name the field the way the rest of
the config does (``alerts.receivers.water.email.port: Input should be …``), see
docs/alerts.md for a full example.

Secrets (SMTP password, LINE channel token, LINE WORKS client and bot secrets, the
ack-link key) are never required in the file: each has a ``…_env`` twin naming an
environment variable that holds it, because ``YUKIMIZU_ALERTS__…`` overrides reach only
one level below ``[alerts]`` (docs/architecture.md#conventions). The LINE WORKS private
key is a file of its own (``private_key_file``).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from core.config import Config, ConfigError, config_path, validate_section

JST = ZoneInfo("Asia/Tokyo")

ChannelName = Literal["lineworks", "line", "email", "webhook", "mqtt", "console"]
CHANNELS: tuple[ChannelName, ...] = ("lineworks", "line", "email", "webhook", "mqtt", "console")
Label = Literal["rule", "category", "subject", "subject_kind", "district", "severity"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Severity = Literal["critical", "warning", "info"]
Category = Literal["snow", "water", "plow", "system"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _secret(value: SecretStr | None, env: str | None, environ: Mapping[str, str]) -> str | None:
    if env:
        return environ.get(env)
    return value.get_secret_value() if value is not None else None


class EmailChannel(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    # CA bundle the STARTTLS certificate must chain to (default: the system's CAs)
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None  # name of an environment variable holding the password
    from_addr: str = "yukimizu@localhost"
    to: Annotated[list[str], Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0


class WebhookChannel(_Frozen):
    url: Annotated[str, Field(pattern=r"^https?://")]
    # "full": the documented JSON body; "text": only {"text": …} (Google Chat refuses
    # unknown fields, docs/alerts.md#channels)
    format: Literal["full", "text"] = "full"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class LineChannel(_Frozen):
    """LINE Messaging API push (LINE Notify ended 2025-03-31)."""

    base_url: Annotated[str, Field(pattern=r"^https?://")] = "https://api.line.me"
    token: SecretStr | None = None
    token_env: str | None = None  # environment variable holding the channel access token
    to: Annotated[str, Field(min_length=1)]  # user, group or room id
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class LineWorksChannel(_Frozen):
    """LINE WORKS API 2.0: a bot message to a staff member or a talk room, with a
    service-account token (docs/alerts.md#line-works)."""

    # where the JWT is exchanged for an access token, and the API root (tests point
    # both at a local server)
    auth_url: Annotated[str, Field(pattern=r"^https?://")] = (
        "https://auth.worksmobile.com/oauth2/v2.0/token"
    )
    api_url: Annotated[str, Field(pattern=r"^https?://")] = "https://www.worksapis.com/v1.0"
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None  # environment variable holding the client secret
    service_account: Annotated[str, Field(min_length=1)]  # xxxxx.serviceaccount@…
    private_key_file: Path  # the PEM private key issued for the service account
    scope: Annotated[str, Field(min_length=1)] = "bot"
    bot_id: Annotated[str, Field(min_length=1)]
    # exactly one: the staff member's LINE WORKS user id, or a talk room (channel) id
    user_id: str | None = None
    channel_id: str | None = None
    # the bot's secret: checks X-WORKS-Signature on its callback (replies such as 確認);
    # without one, replies are refused
    bot_secret: SecretStr | None = None
    bot_secret_env: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @model_validator(mode="after")
    def _target(self) -> LineWorksChannel:
        if bool(self.user_id) == bool(self.channel_id):
            raise ValueError("give exactly one of user_id or channel_id")
        return self


class MqttChannel(_Frozen):
    # Retained state per subject under {topic}/{subject_kind}/{subject}; the
    # connection is the main [mqtt] one.
    topic: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] = "yukimizu/alerts/state"


class ConsoleChannel(_Frozen):
    level: Literal["info", "warning"] = "warning"


class Receiver(_Frozen):
    label: str = ""  # display name, e.g. "佐藤 (除雪当番)"
    # Channels in the order they are tried; a channel that keeps failing hands the
    # notification to the next. Default: every configured channel in CHANNELS order.
    order: list[ChannelName] | None = None
    lineworks: LineWorksChannel | None = None
    line: LineChannel | None = None
    email: EmailChannel | None = None
    webhook: WebhookChannel | None = None
    mqtt: MqttChannel | None = None
    console: ConsoleChannel | None = None

    @model_validator(mode="after")
    def _order(self) -> Receiver:
        configured = [c for c in CHANNELS if getattr(self, c) is not None]
        if not configured:
            raise ValueError(
                "a receiver needs at least one channel (lineworks, line, email, webhook, …)"
            )
        for c in self.order or []:
            if getattr(self, c) is None:
                raise ValueError(f"order names {c!r}, which this receiver does not configure")
        return self

    def channels(self) -> list[ChannelName]:
        return list(self.order) if self.order else [c for c in CHANNELS if getattr(self, c)]


class Step(_Frozen):
    # receiver names, or "rota:NAME#N" = the N-th person on call in rota NAME (1 = primary)
    targets: Annotated[list[str], Field(min_length=1)]
    # escalate to the next step when still unacknowledged this long after this step
    # was notified; None on the last step = stay here (repeats continue)
    after_min: Annotated[float, Field(gt=0)] | None = None


class Escalation(_Frozen):
    steps: Annotated[list[Step], Field(min_length=1)]
    # after the last step, start over from the first this many times (PagerDuty loops)
    loops: Annotated[int, Field(ge=0, le=10)] = 0


class Route(_Frozen):
    # every given matcher must match; globs for rules (fnmatch), exact for the others
    rules: list[str] = Field(default_factory=list)
    categories: list[Category] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=list)
    districts: list[str] = Field(default_factory=list)
    receivers: list[str] = Field(default_factory=list)
    escalation: str | None = None
    group_by: list[Label] = Field(default_factory=lambda: ["rule"])  # type: ignore[arg-type]
    # hold matching alerts for the morning digest instead of notifying now
    # (critical alerts never go to a digest)
    digest: bool = False
    name: str = ""

    @model_validator(mode="after")
    def _target(self) -> Route:
        if bool(self.receivers) == bool(self.escalation):
            raise ValueError("give exactly one of receivers = [...] or escalation = '...'")
        return self

    def matches(self, rule: str, category: str, severity: str, district: str | None) -> bool:
        if self.rules and not any(fnmatch.fnmatchcase(rule, g) for g in self.rules):
            return False
        if self.categories and category not in self.categories:
            return False
        if self.severities and severity not in self.severities:
            return False
        return not self.districts or district in self.districts


class Rota(_Frozen):
    """Who is on call: a weekly pattern and dated exceptions, in Asia/Tokyo.

    A duty day starts at ``handover`` (before it, the previous day's people are on
    call). Each entry lists receivers, primary first.
    """

    handover: time = time(8, 30)
    weekly: dict[Weekday, list[str]] = Field(default_factory=dict)
    overrides: dict[date, list[str]] = Field(default_factory=dict)

    def on_call(self, at: datetime) -> list[str]:
        local = at.astimezone(JST)
        day = local.date() if local.time() >= self.handover else local.date() - timedelta(days=1)
        if day in self.overrides:
            return list(self.overrides[day])
        return list(self.weekly.get(WEEKDAYS[day.weekday()], []))


class Inhibit(_Frozen):
    """While a *source* alert fires, matching *target* alerts are not notified.

    Like Alertmanager's inhibit_rules: ``equal`` labels must have the same value on
    both; ``source_subject_is`` names a target label that must equal the source's
    subject (``system.kind_silent`` has subject ``snow`` and folds alerts of category
    ``snow``).
    """

    source_rules: Annotated[list[str], Field(min_length=1)]
    source_subjects: list[str] = Field(default_factory=list)
    target_rules: Annotated[list[str], Field(min_length=1)]
    target_subject_kinds: list[str] = Field(default_factory=list)
    equal: list[Label] = Field(default_factory=list)
    source_subject_is: Label | None = None


def _default_inhibit() -> list[Inhibit]:
    return [
        # docs/domain.md#town-wide-alert: a town-wide alert or dispatch folds per-station notices
        Inhibit(
            source_rules=["snow.town_alert", "snow.dispatch"],
            source_subjects=["town"],
            target_rules=["snow.*"],
            target_subject_kinds=["station"],
        ),
        # a whole kind silent (gateway or broker down): one alert, not thirty
        Inhibit(
            source_rules=["system.kind_silent"],
            source_subjects=["snow", "water", "plow"],
            target_rules=["*stale*", "*offline*", "*silent*"],
            target_subject_kinds=["station", "meter", "plow"],
            source_subject_is="category",
        ),
    ]


class AckConfig(_Frozen):
    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787  # 0 = off
    # what links point at (a reverse proxy in front of the listener, on a town server)
    base_url: Annotated[str, Field(pattern=r"^https?://")] = "http://127.0.0.1:8787"
    secret: SecretStr | None = None
    secret_env: str | None = None  # env variable with the HMAC key; else state_dir/ack.key
    link_ttl_h: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0
    # MQTT ack topic ({"id": 12, "by": "sato"}); "" = off
    mqtt_topic: Annotated[str, Field(pattern=r"^[^#+]*$")] = ""


class RetryConfig(_Frozen):
    attempts: Annotated[int, Field(ge=1, le=20)] = 3  # per channel, before falling back
    backoff_s: Annotated[float, Field(gt=0, le=3600)] = 5.0  # doubles per attempt
    max_backoff_s: Annotated[float, Field(gt=0, le=24 * 3600)] = 300.0  # also caps Retry-After
    # A critical notification that failed on every channel starts over from the
    # receiver's first channel after each of these waits (minutes), one per round;
    # then it stays failed (the repeat reminder carries on). docs/alerts.md#critical-retries
    critical_rounds_min: list[Annotated[float, Field(gt=0, le=24 * 60)]] = Field(
        default_factory=lambda: [2.0, 5.0, 10.0, 20.0, 30.0], max_length=50
    )


class AlertsConfig(_Frozen):
    state_dir: Path = Path(".yukimizu/alerts")
    # the rules engine's state database whose outbox this service reads
    outbox: Path = Path(".yukimizu/rules/rules.sqlite")
    poll_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    lang: Literal["ja", "en"] = "ja"
    group_wait_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    group_interval_s: Annotated[float, Field(ge=0, le=24 * 3600)] = 300.0
    repeat_interval_min: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 60.0
    send_resolved: bool = True
    digest_at: time = time(8, 0)  # JST
    write_events: bool = True  # alert_event points for Grafana annotations
    # the service's own counters (yukimizu_alerts, yukimizu_alerts_channel) to InfluxDB
    write_metrics: bool = True
    metrics_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    defaults: dict[ChannelName, dict[str, Any]] = Field(default_factory=dict)
    receivers: dict[str, Receiver] = Field(
        default_factory=lambda: {"console": Receiver(console=ConsoleChannel())}
    )
    routes: list[Route] = Field(default_factory=list)
    default_receiver: str = "console"
    escalations: dict[str, Escalation] = Field(default_factory=dict)
    rotas: dict[str, Rota] = Field(default_factory=dict)
    inhibit: list[Inhibit] = Field(default_factory=_default_inhibit)
    ack: AckConfig = Field(default_factory=AckConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    # who hears of a system.delivery_failed alert (a critical notification that failed
    # on every channel); None: every receiver except the one that failed
    delivery_failed_to: list[str] | None = None

    def route_for(self, rule: str, category: str, severity: str, district: str | None) -> int:
        """Index of the first matching route, -1 for the default route."""
        for i, r in enumerate(self.routes):
            if r.digest and severity == "critical":
                continue  # critical goes at once, never into a digest
            if r.matches(rule, category, severity, district):
                return i
        return -1

    def route(self, index: int) -> Route:
        if index < 0:
            return Route(receivers=[self.default_receiver], name="default")
        return self.routes[index]

    def policy(self, route: Route) -> Escalation:
        if route.escalation:
            return self.escalations[route.escalation]
        return Escalation(steps=[Step(targets=list(route.receivers))])

    def resolve_targets(self, targets: list[str], at: datetime) -> list[str]:
        """Receiver names for one step at ``at`` (rota references looked up)."""
        out: list[str] = []
        for t in targets:
            if t.startswith("rota:"):
                name, _, pos = t[5:].partition("#")
                people = self.rotas[name].on_call(at)
                idx = int(pos or 1) - 1
                if idx < len(people):
                    out.append(people[idx])
            else:
                out.append(t)
        return list(dict.fromkeys(out))


def _cross_check(ac: AlertsConfig) -> list[str]:
    problems: list[str] = []
    known = set(ac.receivers)

    def target_ok(t: str, where: str) -> None:
        if t.startswith("rota:"):
            name, _, pos = t[5:].partition("#")
            if name not in ac.rotas:
                problems.append(f"  {where}: unknown rota {name!r} (known: {sorted(ac.rotas)})")
            if pos and not pos.isdigit():
                problems.append(f"  {where}: write rota:NAME#N with N = 1, 2, …")
        elif t not in known:
            problems.append(f"  {where}: unknown receiver {t!r} (known: {sorted(known)})")

    if ac.default_receiver not in known:
        problems.append(f"  alerts.default_receiver: unknown receiver {ac.default_receiver!r}")
    for i, r in enumerate(ac.routes):
        for j, t in enumerate(r.receivers):
            target_ok(t, f"alerts.routes.{i}.receivers.{j}")
        if r.escalation and r.escalation not in ac.escalations:
            problems.append(
                f"  alerts.routes.{i}.escalation: unknown escalation policy "
                f"{r.escalation!r} (known: {sorted(ac.escalations)})"
            )
    problems += [
        f"  alerts.delivery_failed_to.{i}: unknown receiver {t!r} (known: {sorted(known)})"
        for i, t in enumerate(ac.delivery_failed_to or [])
        if t not in known
    ]
    for name, esc in ac.escalations.items():
        for i, s in enumerate(esc.steps):
            for j, t in enumerate(s.targets):
                target_ok(t, f"alerts.escalations.{name}.steps.{i}.targets.{j}")
    for name, rota in ac.rotas.items():
        for day, people in [*rota.weekly.items(), *rota.overrides.items()]:
            for p in people:
                if p not in known:
                    problems.append(f"  alerts.rotas.{name}.{day}: unknown receiver {p!r}")
    return problems


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Merge ``[alerts.defaults.<channel>]`` under every receiver's channel block."""
    defaults = data.get("defaults") or {}
    receivers = data.get("receivers")
    if not isinstance(defaults, dict) or not isinstance(receivers, dict):
        return data
    # the local default receiver exists unless the file redefines it
    merged: dict[str, Any] = {"console": {"console": {}}}
    for name, given in receivers.items():
        rec = dict(given) if isinstance(given, dict) else given
        if isinstance(rec, dict):
            for ch, base in defaults.items():
                if isinstance(base, dict) and isinstance(rec.get(ch), dict):
                    rec[ch] = {**base, **rec[ch]}
        merged[name] = rec
    return {**data, "receivers": merged}


def _check_secrets(ac: AlertsConfig, environ: Mapping[str, str]) -> list[str]:
    problems = []
    for name, rec in ac.receivers.items():
        for ch, env in (
            ("email", rec.email.password_env if rec.email else None),
            ("line", rec.line.token_env if rec.line else None),
        ):
            if env and env not in environ:
                key = "password_env" if ch == "email" else "token_env"
                problems.append(
                    f"  alerts.receivers.{name}.{ch}.{key}: environment variable {env} is not set"
                )
        if rec.line and not rec.line.token and not rec.line.token_env:
            problems.append(f"  alerts.receivers.{name}.line: needs token or token_env")
        if rec.lineworks:
            problems += _check_lineworks(name, rec.lineworks, environ)
    if ac.ack.secret_env and ac.ack.secret_env not in environ:
        problems.append(
            f"  alerts.ack.secret_env: environment variable {ac.ack.secret_env} is not set"
        )
    return problems


def _check_lineworks(name: str, lw: LineWorksChannel, environ: Mapping[str, str]) -> list[str]:
    where = f"alerts.receivers.{name}.lineworks"
    problems = [
        f"  {where}.{key}: environment variable {env} is not set"
        for key, env in (
            ("client_secret_env", lw.client_secret_env),
            ("bot_secret_env", lw.bot_secret_env),
        )
        if env and env not in environ
    ]
    if not lw.client_secret and not lw.client_secret_env:
        problems.append(f"  {where}: needs client_secret or client_secret_env")
    if not lw.private_key_file.is_file():
        problems.append(f"  {where}.private_key_file: no such file {lw.private_key_file}")
    return problems


def _resolve_key_files(cfg: Config, ac: AlertsConfig) -> AlertsConfig:
    """LINE WORKS private key paths relative to the config file, like every path."""
    receivers = dict(ac.receivers)
    for name, rec in ac.receivers.items():
        if rec.lineworks:
            path = config_path(cfg, rec.lineworks.private_key_file)
            lw = rec.lineworks.model_copy(update={"private_key_file": path})
            receivers[name] = rec.model_copy(update={"lineworks": lw})
    return ac.model_copy(update={"receivers": receivers})


def load_alerts_config(cfg: Config, environ: Mapping[str, str] | None = None) -> AlertsConfig:
    """Validate ``[alerts]``; raise :class:`ConfigError` naming the field."""
    env = os.environ if environ is None else environ
    ac = validate_section("alerts", _with_defaults(dict(cfg.alerts)), AlertsConfig)
    ac = _resolve_key_files(cfg, ac)
    problems = _cross_check(ac) + _check_secrets(ac, env)
    if problems:
        raise ConfigError("invalid configuration [alerts]:\n" + "\n".join(problems))

    return ac.model_copy(
        update={
            "state_dir": config_path(cfg, ac.state_dir),
            "outbox": config_path(cfg, ac.outbox),
        }
    )


def email_password(ch: EmailChannel, environ: Mapping[str, str] | None = None) -> str | None:
    return _secret(ch.password, ch.password_env, os.environ if environ is None else environ)


def line_token(ch: LineChannel, environ: Mapping[str, str] | None = None) -> str:
    return _secret(ch.token, ch.token_env, os.environ if environ is None else environ) or ""


def lineworks_client_secret(ch: LineWorksChannel, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return _secret(ch.client_secret, ch.client_secret_env, env) or ""


def lineworks_bot_secret(ch: LineWorksChannel, environ: Mapping[str, str] | None = None) -> str:
    """The bot secret, or "" when none is configured (then callbacks are refused)."""
    env = os.environ if environ is None else environ
    return _secret(ch.bot_secret, ch.bot_secret_env, env) or ""


def ack_secret(ac: AlertsConfig, environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key for ack links: config, else env, else a generated ``state_dir/ack.key``."""
    s = _secret(ac.ack.secret, ac.ack.secret_env, os.environ if environ is None else environ)
    if s:
        return s.encode()
    path = ac.state_dir / "ack.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process (the CLI beside the service) made it just now
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
    return path.read_text().strip().encode()
