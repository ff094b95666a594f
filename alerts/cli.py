"""``yukimizu alerts run|list|show|ack|silence``."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from datetime import datetime
from typing import Any

from alerts.config import JST, AlertsConfig, load_alerts_config
from alerts.matching import suppression
from alerts.service import AlertService
from alerts.store import Store
from core import config as core_config
from core.config import Config, ConfigError
from core.signals import stop_on_signals

log = logging.getLogger(__name__)


def _load(args: argparse.Namespace) -> tuple[Config, AlertsConfig]:
    cfg = core_config.resolve_config(getattr(args, "config", None))
    return cfg, load_alerts_config(cfg)


def _store(args: argparse.Namespace) -> tuple[AlertsConfig, Store]:
    _cfg, ac = _load(args)
    return ac, Store(ac.state_dir / "alerts.sqlite")


def _fmt(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, JST).strftime("%Y-%m-%d %H:%M:%S JST")


def cmd_run(args: argparse.Namespace) -> int:
    cfg, ac = _load(args)
    svc = AlertService(cfg, ac)
    stop = stop_on_signals(log, "stopping after the current step")
    svc.run(stop)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _ac, store = _store(args)
    rows = store.list_alerts(include_resolved=args.all, limit=args.limit)
    if not rows:
        print("no open alerts" if not args.all else "no alerts")
        return 0
    for a in rows:
        by = f" by {a['acked_by']}" if a["acked_by"] else ""
        print(
            f"{a['id']:>5}  {_fmt(a['fired_at'])}  {a['status']:<12}{by:<12} "
            f"{a['severity']:<8} {a['key']}  {a['message'][:80]}"
        )
    return 0


def _summary(ac: AlertsConfig, store: Store) -> None:
    cursor = store.meta("cursor", "0")
    counts = store.status_counts("alerts")
    notes = store.status_counts("notifications")
    print(f"outbox:        {ac.outbox} (cursor {cursor})")
    bad, newest_bad = store.rejected_outbox(3)
    if bad:
        print(f"outbox records that are not valid transitions (set aside): {bad}")
        for b in newest_bad:
            print(f"  #{b['outbox_id']} read {_fmt(b['rejected_at'])}: {b['reason'][:160]}")
    print(f"alerts:        {', '.join(f'{k}={v}' for k, v in counts.items()) or 'none'}")
    print(f"notifications: {', '.join(f'{k}={v}' for k, v in notes.items()) or 'none'}")
    for f in store.channel_failures():
        print(f"channel failures: {f['channel']}: {f['n']} (last {_fmt(f['last'])})")
    for n in store.failed_notifications(10):
        again = f"; round {n['rounds'] + 1} at {_fmt(n['retry_at'])}" if n["retry_at"] else ""
        print(f"FAILED notification #{n['id']} to {n['receiver']}: {n['last_error']}{again}")
    rejected, newest = store.rejected_events(3)
    if rejected:
        print(f"alert_event points InfluxDB refused (set aside): {rejected}")
        for r in newest:
            print(f"  {_fmt(r['rejected_at'])} {r['reason'][:160]}")
    for s in store.active_silences(time.time()):
        print(f"silence #{s['id']} until {_fmt(s['ends_at'])}: {_silence_what(s)}")


def cmd_show(args: argparse.Namespace) -> int:
    ac, store = _store(args)
    if args.id is None:
        _summary(ac, store)
        return 0
    a = store.alert(args.id)
    if a is None:
        print(f"no alert with id {args.id}", file=sys.stderr)
        return 1
    print(f"alert #{a['id']}  {a['key']}  ({a['severity']}, {a['category']})")
    print(f"  subject:      {a['subject_kind']} {a['subject']}  district {a['district'] or '-'}")
    print(f"  status:       {a['status']}")
    print(f"  fired:        {_fmt(a['fired_at'])} (read {_fmt(a['received_at'])})")
    print(
        f"  acknowledged: {_fmt(a['acked_at'])} by {a['acked_by'] or '-'} via {a['ack_via'] or '-'}"
    )
    print(f"  resolved:     {_fmt(a['resolved_at'])}")
    print(f"  duplicates:   {a['duplicates']}")
    print(f"  message:      {a['message']}")
    if a["status"] == "firing":
        open_alerts = store.open_alerts()
        silences = store.active_silences(time.time())
        why = suppression(ac, a, open_alerts, silences, time.time())
        print(f"  suppressed:   {why or 'no'}")
    notes = store.notifications_for_alert(a["id"])
    for n in notes:
        print(
            f"  notification #{n['id']} {n['kind']:<10} step {n['step'] + 1} to {n['receiver']}: "
            f"{n['status']} {('via ' + n['channel']) if n['channel'] else ''} "
            f"{_fmt(n['sent_at'] or n['created_at'])}"
        )
        for at in store.attempts_of(n["id"]):
            mark = "ok " if at["ok"] else "ERR"
            print(f"      {mark} {_fmt(at['at'])} {at['channel']}: {at['detail'][:160]}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    _ac, store = _store(args)
    changed = store.acknowledge(args.ids, args.by, "cli", time.time())
    done = {a["id"] for a in changed}
    for i in args.ids:
        print(f"alert #{i}: {'acknowledged' if i in done else 'not firing (nothing to do)'}")
    return 0 if done else 1


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def _duration_s(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"--for: write e.g. 30m, 2h, 1d (got {text!r})")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _silence_what(s: dict[str, Any]) -> str:
    parts = [f"{k}={s[k]}" for k in ("rule", "subject", "district") if s[k]]
    return (
        " ".join(parts)
        + (f" by {s['created_by']}" if s["created_by"] else "")
        + (f" ({s['comment']})" if s["comment"] else "")
    )


def cmd_silence(args: argparse.Namespace) -> int:
    _ac, store = _store(args)
    now = time.time()
    if args.action == "add":
        if not (args.rule or args.subject or args.district):
            print(
                "say what to silence: --rule GLOB, --subject ID, --district NAME", file=sys.stderr
            )
            return 2
        if args.until:
            end = datetime.fromisoformat(args.until)
            if end.tzinfo is None:
                end = end.replace(tzinfo=JST)  # a town office's times are JST
            ends = end.timestamp()
        else:
            ends = now + _duration_s(args.duration)
        sid = store.add_silence(
            args.rule, args.subject, args.district, now, ends, args.by, args.comment
        )
        print(f"silence #{sid} until {_fmt(ends)}")
        return 0
    if args.action == "expire":
        n = store.expire_silence(args.id, now)
        print(f"silence #{args.id}: {'expired' if n else 'not active'}")
        return 0 if n else 1
    rows = store.active_silences(now)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no active silences")
    for s in rows:
        print(f"#{s['id']:<4} until {_fmt(s['ends_at'])}  {_silence_what(s)}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="alert notifications, acknowledgement, silences")
    asub = p.add_subparsers(dest="alerts_command", required=True)
    r = asub.add_parser("run", help="run the alerts service (reads the rules outbox)")
    r.set_defaults(func=cmd_run)
    ls = asub.add_parser("list", help="open alerts (newest first)")
    ls.add_argument("--all", action="store_true", help="resolved ones too")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)
    sh = asub.add_parser("show", help="one alert's lifecycle and notifications, or a summary")
    sh.add_argument("id", type=int, nargs="?")
    sh.set_defaults(func=cmd_show)
    ack = asub.add_parser("ack", help="acknowledge alerts (stops their escalation)")
    ack.add_argument("ids", type=int, nargs="+", metavar="ID")
    ack.add_argument("--by", required=True, help="who acknowledges")
    ack.set_defaults(func=cmd_ack)
    si = asub.add_parser("silence", help="silence alerts for a while")
    ssub = si.add_subparsers(dest="action", required=True)
    add = ssub.add_parser("add", help="add a silence")
    add.add_argument("--rule", help="rule glob, e.g. 'water.*'")
    add.add_argument("--subject", help="device / subject id or glob")
    add.add_argument("--district")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", help="e.g. 30m, 2h, 1d")
    when.add_argument("--until", help="ISO time (JST if no offset)")
    add.add_argument("--by", required=True)
    add.add_argument("--comment", default="")
    sl = ssub.add_parser("list", help="active silences")
    sl.add_argument("--json", action="store_true")
    ex = ssub.add_parser("expire", help="end a silence now")
    ex.add_argument("id", type=int)
    for q in (add, sl, ex):
        q.set_defaults(func=cmd_silence)
