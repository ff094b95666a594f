"""``yukimizu report meter-reading | plow-daily | plow-season`` (docs/reports.md).

Arguments that cannot give a true report are refused before InfluxDB is asked (exit 2),
and a report with nothing in it is a warning, not an empty file (exit 3); the messages
are Japanese unless ``--lang en`` (reports/messages.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from core.away import load_away
from core.config import load_registry, resolve_config
from core.influxql import InfluxQuery
from reports import plow_render
from reports.config import load_reports_config
from reports.messages import (
    EXIT_NO_DATA,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNWRITABLE,
    LANGS,
    Lang,
    Refused,
    text,
)
from reports.meter import COLUMNS, MeterReading
from reports.output import EncodeError, csv_bytes, write_out, xlsx_bytes
from reports.plow import PlowAnalysis

JST = dt.timezone(dt.timedelta(hours=9))


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        # parsed before --lang is known: both languages
        raise argparse.ArgumentTypeError(
            f"日付は YYYY-MM-DD で指定してください / not a date (YYYY-MM-DD): {value!r}"
        ) from None


Handler = Callable[[argparse.Namespace], int]


def _refusing(handler: Handler) -> Handler:
    """Run a report; a :class:`Refused` becomes its message on stderr and exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except Refused as exc:
            print(f"yukimizu: {exc.text(args.lang)}", file=sys.stderr)
            return EXIT_REFUSED

    return run


def _warn(args: argparse.Namespace, key: str, **values: object) -> int:
    lang: Lang = args.lang
    print(f"yukimizu: {text(key, lang, **values)}", file=sys.stderr)
    return EXIT_NO_DATA


def _today() -> dt.date:
    return dt.datetime.now(JST).date()


def _not_future(day: dt.date, what: str, what_en: str) -> None:
    today = _today()
    if day > today:
        raise Refused("future_date", what=what, what_en=what_en, date=day, today=today)


def _known(name: str | None, known: set[str], key: str) -> None:
    if name is not None and name not in known:
        raise Refused(key, name=name, known=", ".join(sorted(known)))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="office outputs: 検針 files, 除雪作業日報")
    rs = p.add_subparsers(dest="report", required=True)

    m = rs.add_parser("meter-reading", help="検針: register, previous reading, use (m³)")
    m.add_argument("--date", type=_date, required=True, help="reading date (00:00 JST)")
    m.add_argument("--district", help="only this district")
    m.add_argument(
        "--previous",
        type=_date,
        help="previous reading date (default: from the district's schedule); "
        "an extra reading (move-out) off the schedule",
    )
    m.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    m.add_argument("--encoding", choices=["utf-8-sig", "shift_jis"], default="utf-8-sig")
    m.add_argument("--out", type=Path, help="file (default: stdout)")
    m.set_defaults(func=_refusing(_meter_reading))

    d = rs.add_parser("plow-daily", help="除雪作業日報: per vehicle and contractor")
    d.add_argument("--date", type=_date, required=True, help="work day (dispatch start, JST)")
    d.add_argument("--contractor", help="only this contractor's vehicles")
    d.add_argument("--format", choices=["csv", "xlsx", "html"], default="csv")
    d.add_argument("--out", type=Path)
    d.set_defaults(func=_refusing(_plow_daily))

    s = rs.add_parser("plow-season", help="dispatches of a season with 除雪作業時間")
    s.add_argument("--from", dest="first", type=_date, required=True)
    s.add_argument("--to", dest="last", type=_date, required=True)
    s.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    s.add_argument("--out", type=Path)
    s.set_defaults(func=_refusing(_plow_season))
    for parser in (m, d, s):
        parser.add_argument(
            "--lang", choices=LANGS, default="ja", help="language of errors and warnings"
        )


def _meter_reading(args: argparse.Namespace) -> int:
    if args.previous is not None and args.previous >= args.date:
        raise Refused("previous_not_before", previous=args.previous, date=args.date)
    _not_future(args.date, "検針日", "the reading date")
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    registry = load_registry(cfg)
    _known(args.district, {m.district for m in registry.meters.values()}, "unknown_district")
    q = InfluxQuery(cfg.influx)
    # [rules.away]: a standstill inside a registered away period is flagged 不在届あり
    away = load_away(cfg)
    rows = MeterReading(q, registry, rcfg.meter_reading, away).rows(
        args.date, args.district, args.previous
    )
    if not rows:
        raise Refused(
            "not_a_reading_date",
            date=args.date,
            where=f"地区「{args.district}」" if args.district else "どの地区",
            where_en=f"district {args.district}" if args.district else "any district",
        )
    if all(r.register_l is None for r in rows):
        gap_h = rcfg.meter_reading.estimate_max_gap_h
        return _warn(args, "no_meter_data", date=args.date, count=len(rows), gap_h=gap_h)
    header = [c for c, _ in COLUMNS]
    values = [r.values() for r in rows]
    if args.format == "xlsx":
        data = xlsx_bytes([(f"検針 {args.date}", header, values)])
    else:
        try:
            data = csv_bytes(header, values, args.encoding)
        except EncodeError as exc:
            message = text(
                "unencodable",
                args.lang,
                where="見出し" if exc.row == 0 else f"{exc.row} 行目 ({exc.key}) ",
                where_en="header" if exc.row == 0 else f"row {exc.row} ({exc.key})",
                column=exc.column,
                char=exc.char,
                code=ord(exc.char[0]),
            )
            print(f"yukimizu: {message}", file=sys.stderr)
            return EXIT_UNWRITABLE
    write_out(data, args.out)
    return EXIT_OK


def _plow_daily(args: argparse.Namespace) -> int:
    _not_future(args.date, "作業日", "the work day")
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    registry = load_registry(cfg)
    _known(args.contractor, {p.contractor for p in registry.plows.values()}, "unknown_contractor")
    analysis = PlowAnalysis(InfluxQuery(cfg.influx), registry, rcfg.plow)
    trips, ds = analysis.day(args.date)
    if args.contractor:
        trips = [tr for tr in trips if tr.contractor == args.contractor]
    if not trips:
        return _warn(
            args,
            "no_plow_data",
            period=f"{args.date} ",
            period_en=f"on {args.date}",
            who=f"（業者「{args.contractor}」）" if args.contractor else "",
            who_en=f" of contractor {args.contractor}" if args.contractor else "",
        )
    title = f"除雪作業日報 {args.date.isoformat()}" + (
        f" {args.contractor}" if args.contractor else ""
    )
    note = plow_render.trace_note(trips)
    if args.format == "html":
        data = plow_render.daily_html(args.date, trips, ds, title).encode("utf-8")
    elif args.format == "xlsx":
        data = xlsx_bytes(
            [
                ("車両別", *plow_render.vehicles(trips)),
                ("業者別", *plow_render.contractors(trips)),
                ("出動", *plow_render.dispatches(ds)),
                ("除雪区間", *plow_render.segments(trips)),
                ("注記", ["注記"], [[title], [note]]),
            ]
        )
    else:
        header, rows = plow_render.vehicles(trips)
        data = csv_bytes(header, rows, "utf-8-sig")
    write_out(data, args.out)
    print(note, file=sys.stderr)
    return EXIT_OK


def _plow_season(args: argparse.Namespace) -> int:
    if args.first > args.last:
        raise Refused("from_after_to", first=args.first, last=args.last)
    _not_future(args.first, "期間の始め", "the period's start")
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    analysis = PlowAnalysis(InfluxQuery(cfg.influx), load_registry(cfg), rcfg.plow)
    trips, ds = analysis.period(args.first, args.last)
    if not ds:
        return _warn(
            args,
            "no_plow_data",
            period=f"{args.first}〜{args.last} ",
            period_en=f"from {args.first} to {args.last}",
            who="",
            who_en="",
        )
    header, rows = plow_render.dispatches(ds)
    note = plow_render.trace_note(trips)
    if args.format == "xlsx":
        data = xlsx_bytes([("除雪出動", header, rows), ("注記", ["注記"], [[note]])])
    else:
        data = csv_bytes(header, rows, "utf-8-sig")
    write_out(data, args.out)
    print(note, file=sys.stderr)
    return EXIT_OK
