"""Channels: e-mail (SMTP), generic webhook, LINE Messaging API push, LINE WORKS bot
message (alerts/lineworks.py), MQTT, console.

Each ``send_*`` delivers one notification or raises :class:`DeliveryError`, which says
whether trying the same channel again may help (connection refused, timeout, 429, 5xx)
and how long the server asked us to wait (``Retry-After``). The service decides about
retries and fallback (alerts/delivery.py); nothing here sleeps.
"""

from __future__ import annotations

import email.utils
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from alerts.config import (
    EmailChannel,
    LineChannel,
    MqttChannel,
    Receiver,
    WebhookChannel,
    email_password,
    line_token,
)
from core.config import MqttConfig
from core.publish import Publisher, PublishError

log = logging.getLogger(__name__)

LINE_TEXT_MAX = 5000  # characters in one LINE text message


class DeliveryError(Exception):
    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status = status  # the HTTP status, when there was one


@dataclass(frozen=True)
class Outgoing:
    """One notification as rendered when it was decided (alerts/render.py)."""

    id: int
    receiver: str
    kind: str
    title: str
    text: str
    body: dict[str, Any]
    retry_key: str
    subjects: list[tuple[str, str]] = field(default_factory=list)  # (subject_kind, subject)


@dataclass
class Context:
    mqtt: MqttConfig
    # (subject_kind, subject) → that subject's retained state document
    subject_state: Callable[[str, str], dict[str, Any]]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)  # HTTP-date form
        return max(0.0, parsed.timestamp() - email.utils.localtime().timestamp())


def _post_json(
    url: str, payload: dict[str, Any], headers: dict[str, str], timeout_s: float
) -> tuple[int, str]:
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return post(url, data, "application/json; charset=utf-8", headers, timeout_s)


def post(
    url: str, data: bytes, content_type: str, headers: dict[str, str], timeout_s: float
) -> tuple[int, str]:
    """POST ``data``; (status, start of the answer), or DeliveryError: retryable for 408,
    429, 5xx and no connection, with the server's ``Retry-After``."""
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", content_type)
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), resp.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace")
        status = int(exc.code)
        if status == 409 and "X-Line-Retry-Key" in headers:
            # LINE: a request with this retry key was already accepted — delivered.
            return status, body
        retryable = status == 429 or status >= 500 or status == 408
        raise DeliveryError(
            f"HTTP {status} from {url}: {body[:200]}",
            retryable=retryable,
            retry_after_s=_retry_after(exc.headers.get("Retry-After")) if retryable else None,
            status=status,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach {url}: {reason}", retryable=True) from None


def send_webhook(ch: WebhookChannel, msg: Outgoing) -> str:
    payload = {"text": msg.text} if ch.format == "text" else {"text": msg.text, **msg.body}
    status, _ = _post_json(ch.url, payload, dict(ch.headers), ch.timeout_s)
    return f"HTTP {status}"


def send_line(ch: LineChannel, msg: Outgoing) -> str:
    text = msg.text if len(msg.text) <= LINE_TEXT_MAX else msg.text[: LINE_TEXT_MAX - 1] + "…"
    payload = {"to": ch.to, "messages": [{"type": "text", "text": text}]}
    headers = {
        "Authorization": f"Bearer {line_token(ch)}",
        # The same key on every retry: LINE accepts a key once, so a retry after a
        # lost answer never sends the message twice (409 = already accepted).
        "X-Line-Retry-Key": msg.retry_key,
    }
    status, _ = _post_json(
        ch.base_url.rstrip("/") + "/v2/bot/message/push", payload, headers, ch.timeout_s
    )
    return "already accepted (409)" if status == 409 else f"HTTP {status}"


def send_email(ch: EmailChannel, msg: Outgoing) -> str:
    m = EmailMessage()
    m["Subject"] = msg.title
    m["From"] = ch.from_addr
    m["To"] = ", ".join(ch.to)
    m["Date"] = email.utils.formatdate(localtime=True)
    # a stable Message-ID per notification: a resent copy is recognisably the same mail
    m["Message-ID"] = f"<{msg.retry_key}@yukimizu>"
    m.set_content(msg.text, charset="utf-8")
    try:
        with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_s) as smtp:
            if ch.starttls:
                # Verified: the server's certificate must chain to the system's CAs (or
                # ch.ca_file) and name ch.host. smtplib's default context verifies
                # nothing, which would hand an SMTP password to any interceptor.
                cafile = str(ch.ca_file) if ch.ca_file else None
                smtp.starttls(context=ssl.create_default_context(cafile=cafile))
            if ch.username:
                smtp.login(ch.username, email_password(ch) or "")
            refused = smtp.send_message(m)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            f"SMTP {ch.host}:{ch.port} refused the login: {exc}", retryable=False
        ) from None
    except smtplib.SMTPResponseException as exc:
        # 4xx: try later; 5xx: permanent
        raise DeliveryError(
            f"SMTP {ch.host}:{ch.port}: {exc.smtp_code} {exc.smtp_error!r}",
            retryable=400 <= exc.smtp_code < 500,
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"SMTP {ch.host}:{ch.port}: the server's certificate is not trusted "
            f"({exc.verify_message}); set email.ca_file to its CA",
            retryable=False,
        ) from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {ch.host}:{ch.port}: {exc}", retryable=True) from None
    if refused:
        raise DeliveryError(f"SMTP refused recipients {sorted(refused)}", retryable=False)
    return f"SMTP {ch.host}:{ch.port} accepted for {len(ch.to)} recipient(s)"


def send_mqtt(ch: MqttChannel, msg: Outgoing, ctx: Context) -> str:
    try:
        with Publisher(ctx.mqtt, connect_timeout_s=5, ack_timeout_s=10) as pub:
            for kind, subject in msg.subjects:
                state = ctx.subject_state(kind, subject)
                # retained: a dashboard or panel connecting later sees the current state
                pub.publish(
                    f"{ch.topic}/{kind}/{subject}",
                    json.dumps(state, ensure_ascii=False).encode(),
                    retain=True,
                )
            pub.flush()
    except PublishError as exc:
        raise DeliveryError(f"MQTT: {exc}", retryable=True) from None
    return f"MQTT {len(msg.subjects)} subject state(s) under {ch.topic}"


def send_console(level: str, msg: Outgoing) -> str:
    log.log(logging.WARNING if level == "warning" else logging.INFO, "%s\n%s", msg.title, msg.text)
    return "logged"


def send(channel: str, rec: Receiver, msg: Outgoing, ctx: Context) -> str:
    """Deliver ``msg`` over one channel of ``rec``; a short description, or DeliveryError.
    (LINE WORKS keeps tokens between sends: alerts/delivery.py calls alerts/lineworks.py.)"""
    if channel == "webhook" and rec.webhook:
        return send_webhook(rec.webhook, msg)
    if channel == "line" and rec.line:
        return send_line(rec.line, msg)
    if channel == "email" and rec.email:
        return send_email(rec.email, msg)
    if channel == "mqtt" and rec.mqtt:
        return send_mqtt(rec.mqtt, msg, ctx)
    if channel == "console" and rec.console:
        return send_console(rec.console.level, msg)
    raise DeliveryError(f"receiver has no {channel} channel", retryable=False)
