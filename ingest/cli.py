"""The ``yukimizu`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from ingest.config import Config, ConfigError, load_config
from ingest.deadletter import DeadLetterStore
from ingest.services import ServiceStartError
from sensors.registry import RegistryError

log = logging.getLogger("yukimizu")

DEFAULT_CONFIG = Path("config/yukimizu.toml")


def resolve_config(args: argparse.Namespace) -> Config:
    """The config from ``-c``, else ``$YUKIMIZU_CONFIG``, else ``config/yukimizu.toml``."""
    path: Path | None = getattr(args, "config", None)
    if path is None:
        env = os.environ.get("YUKIMIZU_CONFIG")
        if env:
            path = Path(env)
        elif DEFAULT_CONFIG.exists():
            path = DEFAULT_CONFIG
    return load_config(path)


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.service import Ingest

    cfg = resolve_config(args)
    ingest = Ingest(cfg)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping (flush, ack, disconnect)", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading the device registry")
        ingest.request_reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    ingest.run(stop)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from ingest.service import load_registry

    cfg = resolve_config(args)
    reg = load_registry(cfg)
    print(
        f"configuration OK: {len(reg.stations)} stations, {len(reg.meters)} meters, "
        f"{len(reg.plows)} plows, {len(reg.routes)} route segments; "
        f"MQTT {cfg.mqtt.host}:{cfg.mqtt.port}, InfluxDB {cfg.influx.api} {cfg.influx.url}"
    )
    return 0


def _store(args: argparse.Namespace) -> tuple[Config, DeadLetterStore]:
    cfg = resolve_config(args)
    return cfg, DeadLetterStore(Path(cfg.ingest.state_dir) / "deadletter.sqlite")


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_deadletter(args: argparse.Namespace) -> int:
    from ingest.decode import payload_preview

    cfg, store = _store(args)
    try:
        if args.action == "list":
            items = store.list(reason=args.reason, limit=args.limit, newest=True)
            counts = store.counts()
            if not counts:
                print("no dead letters")
                return 0
            print("dead letters by reason: " + ", ".join(f"{r}={n}" for r, n in counts.items()))
            for item in items:
                print(
                    f"{item.id:>6}  {_fmt_time(item.time)}  {item.reason:<18} {item.topic}  "
                    f"{item.detail[:100]}"
                )
            return 0
        if args.action == "show":
            d = store.get(args.id)
            if d is None:
                print(f"no dead letter with id {args.id}", file=sys.stderr)
                return 1
            print(f"id:     {d.id}\ntime:   {_fmt_time(d.time)}\ntopic:  {d.topic}")
            print(f"reason: {d.reason}\ndetail: {d.detail}\nsize:   {len(d.payload)} bytes")
            print("payload:")
            if args.raw:
                sys.stdout.flush()
                sys.stdout.buffer.write(d.payload + b"\n")
            else:
                print(payload_preview(d.payload, limit=64 * 1024))
            return 0
        if args.action == "replay":
            items = store.list(reason=args.reason, ids=args.ids or None)
            if not args.ids and not args.reason and not args.all:
                print("say which: dead-letter ids, --reason REASON, or --all", file=sys.stderr)
                return 2
            if not items:
                print("nothing to replay")
                return 0
            from ingest.publish import publish_many

            if args.dry_run:
                for d in items:
                    print(f"would replay {d.id} to {d.topic}")
                return 0
            sent = publish_many(cfg.mqtt, [(d.topic, d.payload) for d in items])
            store.delete(ids=[d.id for d in items[:sent]])
            print(
                f"replayed {sent} of {len(items)} dead letters to MQTT "
                f"{cfg.mqtt.host}:{cfg.mqtt.port}; ingest processes them again "
                f"(still-bad ones come back as new dead letters)"
            )
            return 0 if sent == len(items) else 1
        if args.action == "purge":
            if not args.all and not args.reason and args.older_than_days is None:
                print("say which: --reason REASON, --older-than-days N, or --all", file=sys.stderr)
                return 2
            before = (
                time.time() - args.older_than_days * 86400
                if args.older_than_days is not None
                else None
            )
            n = store.delete(reason=args.reason, before=before)
            print(f"purged {n} dead letters")
            return 0
    finally:
        store.close()
    return 2


def cmd_services(args: argparse.Namespace) -> int:
    from ingest import services

    cfg = resolve_config(args)
    s = cfg.services
    if args.action == "up":
        missing = services.ensure_installed()
        if missing:
            print("missing: " + ", ".join(missing) + " (run scripts/setup.sh)", file=sys.stderr)
            return 1
        info = services.up(s.data_dir, s.mqtt_port, s.influx_port, s.vm_port or None)
        for name, entry in info.items():
            print(f"{name:<16} {entry['url']:<28} pid {entry['pid']:<8} log {entry['log']}")
        return 0
    if args.action == "down":
        services.down(s.data_dir)
        print("services stopped")
        return 0
    rows = services.status(s.data_dir)
    if not rows:
        print(f"no services recorded under {s.data_dir}")
        return 1
    ok = True
    for name, port, pid, running in rows:
        state = "running" if running else "stopped"
        print(f"{name:<16} port {port:<6} pid {pid or '-':<8} {state}")
        ok = ok and running
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ingest import demo

    cfg = resolve_config(args)
    if args.action == "stop":
        return demo.stop(cfg)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    scenario = None if args.no_scenario else (args.scenario or demo.DEFAULT_SCENARIO)
    return demo.start(cfg, path, scenario)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yukimizu", description="yukimizu 雪水 telemetry")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML config (default: $YUKIMIZU_CONFIG or config/yukimizu.toml)",
    )
    p.add_argument("--log-level", default=os.environ.get("YUKIMIZU_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("ingest", help="subscribe to MQTT and write readings to InfluxDB")
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("config", help="validate the config file and the device registry")
    sp.add_argument("action", choices=["check"])
    sp.set_defaults(func=cmd_config_check)

    sp = sub.add_parser("deadletter", help="inspect, replay or purge dead letters")
    dl = sp.add_subparsers(dest="action", required=True)
    x = dl.add_parser("list", help="the newest dead letters (oldest of them first)")
    x.add_argument("--reason")
    x.add_argument("--limit", type=int, default=50)
    x = dl.add_parser("show", help="show one dead letter with its payload")
    x.add_argument("id", type=int)
    x.add_argument("--raw", action="store_true", help="write the payload bytes unchanged")
    x = dl.add_parser("replay", help="publish dead letters again to their original topic")
    x.add_argument("ids", type=int, nargs="*")
    x.add_argument("--reason")
    x.add_argument("--all", action="store_true")
    x.add_argument("--dry-run", action="store_true")
    x = dl.add_parser("purge", help="delete dead letters")
    x.add_argument("--reason")
    x.add_argument("--older-than-days", type=float)
    x.add_argument("--all", action="store_true")
    sp.set_defaults(func=cmd_deadletter)

    sp = sub.add_parser("services", help="private local Mosquitto and InfluxDB for this checkout")
    sp.add_argument("action", choices=["up", "down", "status"])
    sp.set_defaults(func=cmd_services)

    from simulators.cli import add_parser as add_simulate

    add_simulate(sub)

    sp = sub.add_parser("demo", help="whole pipeline on local services with simulated devices")
    sp.add_argument("action", nargs="?", choices=["start", "stop"], default="start")
    sp.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="scenario TOML to simulate (default: scenarios/heavy-snow-night.toml)",
    )
    sp.add_argument("--no-scenario", action="store_true", help="only the format examples")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"yukimizu: device registry error: {exc}", file=sys.stderr)
        return 2
    except ServiceStartError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
