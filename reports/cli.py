"""``yukimizu report meter-reading | plow-daily | plow-season`` (docs/reports.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from core.config import ConfigError, load_registry, resolve_config
from core.influxql import InfluxQuery
from reports import plow_render
from reports.config import load_reports_config
from reports.meter import COLUMNS, MeterReading
from reports.output import EncodeError, csv_bytes, write_out, xlsx_bytes
from reports.plow import PlowAnalysis


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


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
    m.set_defaults(func=_meter_reading)

    d = rs.add_parser("plow-daily", help="除雪作業日報: per vehicle and contractor")
    d.add_argument("--date", type=_date, required=True, help="work day (dispatch start, JST)")
    d.add_argument("--contractor", help="only this contractor's vehicles")
    d.add_argument("--format", choices=["csv", "xlsx", "html"], default="csv")
    d.add_argument("--out", type=Path)
    d.set_defaults(func=_plow_daily)

    s = rs.add_parser("plow-season", help="dispatches of a season with 除雪作業時間")
    s.add_argument("--from", dest="first", type=_date, required=True)
    s.add_argument("--to", dest="last", type=_date, required=True)
    s.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    s.add_argument("--out", type=Path)
    s.set_defaults(func=_plow_season)


def _meter_reading(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    q = InfluxQuery(cfg.influx)
    rows = MeterReading(q, load_registry(cfg), rcfg.meter_reading).rows(
        args.date, args.district, args.previous
    )
    if not rows:
        raise ConfigError(
            f"no meter is read on {args.date} (schedule [reports.meter_reading]); "
            "give --previous for a reading off the schedule"
        )
    header = [c for c, _ in COLUMNS]
    values = [r.values() for r in rows]
    if args.format == "xlsx":
        data = xlsx_bytes([(f"検針 {args.date}", header, values)])
    else:
        try:
            data = csv_bytes(header, values, args.encoding)
        except EncodeError as exc:
            print(f"yukimizu: {exc}", file=sys.stderr)
            return 1
    write_out(data, args.out)
    return 0


def _plow_daily(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    analysis = PlowAnalysis(InfluxQuery(cfg.influx), load_registry(cfg), rcfg.plow)
    trips, ds = analysis.day(args.date)
    if args.contractor:
        trips = [tr for tr in trips if tr.contractor == args.contractor]
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
    return 0


def _plow_season(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    rcfg = load_reports_config(cfg)
    analysis = PlowAnalysis(InfluxQuery(cfg.influx), load_registry(cfg), rcfg.plow)
    trips, ds = analysis.period(args.first, args.last)
    header, rows = plow_render.dispatches(ds)
    note = plow_render.trace_note(trips)
    if args.format == "xlsx":
        data = xlsx_bytes([("除雪出動", header, rows), ("注記", ["注記"], [[note]])])
    else:
        data = csv_bytes(header, rows, "utf-8-sig")
    write_out(data, args.out)
    print(note, file=sys.stderr)
    return 0
