"""``yukimizu rules run | check | backtest | params``."""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.config import Config, ConfigError, load_registry, resolve_config
from core.influx import WriteError, Writer, make_writer
from core.influxql import InfluxQuery, QueryError
from core.signals import stop_on_signals
from rules import backtest
from rules.config import RulesConfig, params_table, with_settings
from rules.engine import Engine, warm_up
from rules.families import FAMILIES
from rules.model import DAY_MS, JST, dt_to_ms
from rules.shards import Shard, ShardError
from rules.sources import LateArrivals, LiveSource, RecordedSource
from rules.state import MemoryState, SqliteState
from rules.transitions import Transition

log = logging.getLogger(__name__)


def _configs(args: argparse.Namespace) -> tuple[Config, RulesConfig]:
    cfg = resolve_config(getattr(args, "config", None))
    return cfg, with_settings(cfg, getattr(args, "set", None) or [])


def _time(text: str) -> datetime:
    """ISO 8601 with an offset, a date (00:00 JST), or 'now'."""
    if text == "now":
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        if len(text) == 10:  # a date: local midnight
            return dt.replace(tzinfo=JST)
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +09:00")
    return dt


def _print(t: Transition, lang: str) -> None:
    print(t.line("en" if lang == "en" else "ja"), flush=False)


def _shard(args: argparse.Namespace, rcfg: RulesConfig) -> Shard | None:
    text = getattr(args, "shard", None) or rcfg.shard
    if text is None:
        return None
    try:
        return Shard.parse(text)
    except ShardError as exc:
        raise ConfigError(f"rules.shard: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    cfg, rcfg = _configs(args)
    shard = _shard(args, rcfg)
    registry = load_registry(cfg)
    client = InfluxQuery(cfg.influx)
    writer = make_writer(cfg.influx)
    # Shards share the file (and its outbox, which the alerts service reads); the rest
    # of their state is kept apart.
    state = SqliteState(rcfg.state_dir / "rules.sqlite", shard.suffix if shard else "")
    engine = Engine(registry, rcfg, state, FAMILIES, shard)
    source = LiveSource(
        client, slack_ms=int(rcfg.arrival_slack_s * 1000), devices=engine.own_devices
    )
    stop = stop_on_signals(log, "stopping after this cycle")
    step = rcfg.interval_s * 1000
    log.info(
        "rules%s: %d families, every %d s, look-back %.0f h, state %s, reading %s",
        f" shard {shard}" if shard else "",
        len(engine.families),
        rcfg.interval_s,
        rcfg.lookback_h,
        state.path,
        client.describe(),
    )
    first = not engine.warm
    while not stop.is_set():
        now = dt_to_ms(datetime.now(UTC))
        now -= now % step  # aligned, as a backtest steps
        try:
            if first:
                # Up to this very moment: history that arrived seconds ago counts.
                _warm_up(engine, client, writer, rcfg, dt_to_ms(datetime.now(UTC)))
                first = False
            else:
                result = engine.cycle(now, source)
                for t in result.transitions:
                    log.info("transition: %s", t.line())
                log.debug("cycle %.2f s, %d points", result.seconds, result.points_read)
        except QueryError as exc:
            log.warning("rules: InfluxDB query failed, retrying next cycle: %s", exc)
        _flush(state, writer)
        wait = step - dt_to_ms(datetime.now(UTC)) % step
        stop.wait(wait / 1000)
    state.close()
    writer.close()
    return 0


def _warm_up(
    engine: Engine, client: InfluxQuery, writer: Writer, rcfg: RulesConfig, now: int
) -> None:
    """First start: catch up on ``warmup_days`` of history, cycle by cycle as a
    backtest would (10-minute steps), emitting only what changed within the look-back
    window; the derived series of the history go to InfluxDB directly."""
    log.info("rules: first start: catching up on %.0f days of history", rcfg.warmup_days)
    result = warm_up(engine, client, now, keep_lines=rcfg.write_derived)
    for i in range(0, len(result.lines), 20_000):
        try:
            writer.write(result.lines[i : i + 20_000])
        except WriteError as exc:
            log.warning("rules: derived series of the history not written: %s", exc)
            break
    log.info(
        "rules: caught up: %d steps in %.1f s, %d transitions",
        result.steps,
        result.seconds,
        len(result.transitions),
    )
    for _step, t in result.transitions:
        log.info("transition: %s", t.line())


def _flush(state: SqliteState, writer: Writer) -> None:
    """Write the derived series committed by past cycles; keep them on failure."""
    pending = state.pending_lines()
    if not pending:
        return
    try:
        writer.write([line for _i, line in pending])
    except WriteError as exc:
        log.warning("rules: %d derived points wait for InfluxDB: %s", len(pending), exc)
        return
    state.lines_written([i for i, _line in pending])


def cmd_check(args: argparse.Namespace) -> int:
    """One evaluation now (or at ``--at``), caught up from history; changes nothing."""
    cfg, rcfg = _configs(args)
    registry = load_registry(cfg)
    client = InfluxQuery(cfg.influx)
    at = args.at or datetime.now(UTC)
    now = dt_to_ms(at)
    engine = Engine(registry, rcfg, MemoryState(), FAMILIES)
    result = warm_up(engine, client, now)
    print(f"rules check at {at.isoformat()}: {result.points_read:,} points read")
    print(f"transitions in the last {rcfg.lookback_h:.0f} h:")
    for _step, t in result.transitions:
        _print(t, args.lang)
    firing = engine.firing()
    print(f"firing now: {len(firing)}")
    for t in firing:
        _print(t, args.lang)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    cfg, rcfg = _configs(args)
    registry = load_registry(cfg)
    client = InfluxQuery(cfg.influx)
    start, end = dt_to_ms(args.start), dt_to_ms(args.end)
    if end <= start:
        print("yukimizu rules backtest: --to must be after --from", file=sys.stderr)
        return 2
    step = (args.step or rcfg.interval_s) * 1000
    shard = _shard(args, rcfg)
    families = shard.families(FAMILIES) if shard else list(FAMILIES)
    warm = start - int(rcfg.warmup_days * DAY_MS)
    engine_inputs = Engine(registry, rcfg, MemoryState(), families, shard).inputs
    source = RecordedSource.load(client, engine_inputs, warm, end, arrival=args.arrival)
    result = backtest.run(
        registry,
        rcfg,
        source,
        backtest.Steps(start, end, step, warm),
        families=families,
        keep_points=args.truth is not None,
        shard=shard,
    )
    if args.rule:
        result.transitions = [
            (d, t) for d, t in result.transitions if fnmatch.fnmatch(t.rule, args.rule)
        ]
    print(
        f"backtest {args.start.isoformat()} → {args.end.isoformat()}, step {step // 1000} s: "
        f"{result.steps:,} steps in {result.seconds:.1f} s, {result.points_read:,} points, "
        f"{len(result.transitions)} transitions (nothing sent, nothing written)"
    )
    late = source.arrived_after(end)
    if late.imported:
        _print_imported(late, args.lang)
    backtest.print_transitions(result, args.lang)
    if args.truth is not None:
        if not (args.truth / "truth.json").exists():
            raise ConfigError(f"--truth {args.truth}: no truth.json there")
        print()
        backtest.print_scores(backtest.score(args.truth, result, [f.name for f in families]))
    return 0


def _print_imported(late: LateArrivals, lang: str) -> None:
    """Most of the period arrived after it (lag_s says so): say why little was seen."""
    days = late.median_lag_s / 86_400
    if lang == "en":
        print(
            f"note: {late.late:,} of the {late.loaded:,} points of this period arrived after "
            f"its end (median lag {days:.1f} days): history imported or replayed in bulk? "
            "A backtest sees a point only once it has arrived. "
            "--arrival device treats every point as arrived at its device time."
        )
    else:
        print(
            f"注意: この期間の {late.loaded:,} 点のうち {late.late:,} 点は"
            "期間の終了後に届いています"
            f" (遅延の中央値 {days:.1f} 日)。一括取り込みや再生したデータではありませんか。"
            "バックテストは届いた時点以降の点しか見ません。"
            "--arrival device を付けると、すべての点を測定時刻に届いたものとして扱います。"
        )


def cmd_params(_args: argparse.Namespace) -> int:
    for fam, name, default, _desc in params_table():
        print(f"rules.{fam}.{name} = {default!r}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``rules …`` under the main ``yukimizu`` parser."""
    sp = sub.add_parser("rules", help="the rules engine: run, check, backtest")
    rs = sp.add_subparsers(dest="action", required=True)
    x = rs.add_parser("run", help="the service: evaluate every rules.interval_s (SIGTERM-safe)")
    x.add_argument("--shard", help="this process's share i/n of the town (rules.shard)")
    x.set_defaults(func=cmd_run)
    x = rs.add_parser("check", help="one evaluation now; print transitions and what fires")
    x.add_argument("--at", type=_time, help="evaluate as of this time instead of now")
    x.add_argument("--lang", choices=["ja", "en"], default="ja")
    x.add_argument("--set", action="append", help="family.param=value, e.g. snow.dispatch_cm=12")
    x.set_defaults(func=cmd_check)
    x = rs.add_parser("backtest", help="replay a past period as the scheduler would have")
    x.add_argument("--from", dest="start", type=_time, required=True)
    x.add_argument("--to", dest="end", type=_time, required=True)
    x.add_argument("--step", type=int, help="seconds between evaluations (default interval_s)")
    x.add_argument("--rule", help="only rules matching this glob, e.g. 'water.*'")
    x.add_argument("--set", action="append", help="family.param=value, e.g. snow.dispatch_cm=12")
    x.add_argument("--truth", type=Path, help="simulator ground truth: score every rule")
    x.add_argument(
        "--arrival",
        choices=["lag", "device"],
        default="lag",
        help="when a point counts as arrived: device time + lag_s (default), or its "
        "device time (history imported in bulk)",
    )
    x.add_argument("--shard", help="what shard i/n of `rules run --shard` would produce")
    x.add_argument("--lang", choices=["ja", "en"], default="ja")
    x.set_defaults(func=cmd_backtest)
    x = rs.add_parser("params", help="every threshold and its default")
    x.set_defaults(func=cmd_params)
