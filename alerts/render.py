"""Notification text (Japanese by default, English with ``alerts.lang = "en"``) and the
documented JSON body of webhooks (docs/alerts.md#webhook-body)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alerts.config import JST

_TITLES = {
    "ja": {
        "firing": "発報",
        "escalation": "未確認のため上位へ連絡",
        "repeat": "未確認・再通知",
        "resolved": "解除",
        "digest": "朝のまとめ",
    },
    "en": {
        "firing": "FIRING",
        "escalation": "UNACKNOWLEDGED, escalated",
        "repeat": "UNACKNOWLEDGED, reminder",
        "resolved": "RESOLVED",
        "digest": "Morning digest",
    },
}


def jst(ts: float) -> str:
    return datetime.fromtimestamp(ts, JST).strftime("%m-%d %H:%M")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def alert_json(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": a["id"],
        "key": a["key"],
        "rule": a["rule"],
        "category": a["category"],
        "subject": a["subject"],
        "subject_kind": a["subject_kind"],
        "district": a["district"],
        "severity": a["severity"],
        "status": a["status"],
        "event_time": iso(a["fired_at"]),
        "resolved_time": iso(a["resolved_at"]),
        "message": a["message"],
        "message_en": a["message_en"],
    }


def _line(a: dict[str, Any], lang: str) -> str:
    where = a["subject"] + (f" ({a['district']})" if a["district"] else "")
    msg = a["message_en"] if lang == "en" and a["message_en"] else a["message"]
    return f"#{a['id']} {jst(a['fired_at'])} JST [{a['severity']}] {where}: {msg}"


@dataclass(frozen=True, slots=True)
class Notice:
    """What one notification is about: its kind (firing, escalation, digest,
    resolved), the receiver and the group it goes to, the escalation step, and the
    alerts it reports as firing and as resolved."""

    kind: str
    receiver: str
    group: str
    firing: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0


def render(
    notice: Notice, *, lang: str, ack_url: str | None, notification_id: int
) -> tuple[str, str, dict[str, Any]]:
    """(title, text, JSON body) of one notification."""
    kind, firing, resolved, step = notice.kind, notice.firing, notice.resolved, notice.step
    t = _TITLES[lang]
    shown = firing or resolved
    label = t["resolved"] if kind != "digest" and not firing else t[kind]
    if kind == "escalation":
        label += f" ({'段階' if lang == 'ja' else 'step '}{step + 1})"
    rules = sorted({a["rule"] for a in shown})
    subjects = [a["subject"] for a in shown]
    worst = min((a["severity"] for a in shown), key=["critical", "warning", "info"].index)
    unit = "件" if lang == "ja" else " alert(s)"
    title = (
        f"[雪水] {label} {worst} {', '.join(rules)}: {len(shown)}{unit} "
        f"({', '.join(subjects[:8])}{', …' if len(subjects) > 8 else ''})"
    )
    lines = [title, ""]
    lines += [_line(a, lang) for a in firing]
    if resolved:
        if firing:
            lines += ["", t["resolved"] + ":"]
        lines += [_line(a, lang) + f" → {jst(a['resolved_at'])} JST" for a in resolved]
    if ack_url:
        lines += ["", ("確認 (応答) はこちら: " if lang == "ja" else "Acknowledge: ") + ack_url]
        lines.append(
            f"または yukimizu alerts ack {' '.join(str(a['id']) for a in firing)} --by 名前"
            if lang == "ja"
            else f"or: yukimizu alerts ack {' '.join(str(a['id']) for a in firing)} --by NAME"
        )
    text = "\n".join(lines)
    body = {
        "title": title,
        "kind": kind,
        "status": "firing" if firing else "resolved",
        "notification_id": notification_id,
        "receiver": notice.receiver,
        "group": notice.group,
        "step": step,
        "ack_url": ack_url,
        "alerts": [alert_json(a) for a in firing],
        "resolved": [alert_json(a) for a in resolved],
    }
    return title, text, body


def hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, JST).strftime("%H:%M")


def render_ack(
    acked: list[dict[str, Any]],
    *,
    by: str,
    at: float,
    lang: str,
    notification_id: int,
    receiver: str,
) -> tuple[str, str, dict[str, Any]]:
    """(title, text, JSON body) of the short notice to everyone who was paged for
    ``acked``: who took it and when (docs/alerts.md#who-took-it)."""
    if lang == "en":
        title = f"[雪水] {by} acknowledged ({hhmm(at)} JST)"
    else:
        title = f"[雪水] {by}さんが確認しました ({hhmm(at)})"
    lines = [title, ""] + [_line(a, lang) for a in acked]
    body = {
        "title": title,
        "kind": "ack",
        "status": "acknowledged",
        "notification_id": notification_id,
        "receiver": receiver,
        "group": "",
        "step": 0,
        "ack_url": None,
        "acked_by": by,
        "acked_time": iso(at),
        "alerts": [],
        "resolved": [],
        "acknowledged": [alert_json(a) for a in acked],
    }
    return title, "\n".join(lines), body
