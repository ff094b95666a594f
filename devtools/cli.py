"""``yukimizu services`` and ``yukimizu demo``: local stack for development and the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import DEFAULT_CONFIG, resolve_config
from devtools import demo
from devtools import localstack as services


def cmd_services(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
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
    cfg = resolve_config(args.config)
    if args.action == "stop":
        return demo.stop(cfg)
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    scenario = None if args.no_scenario else (args.scenario or demo.DEFAULT_SCENARIO)
    return demo.start(cfg, path, scenario)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``services`` and ``demo`` under the main ``yukimizu`` parser."""
    sp = sub.add_parser("services", help="private local Mosquitto and InfluxDB for this checkout")
    sp.add_argument("action", choices=["up", "down", "status"])
    sp.set_defaults(func=cmd_services)

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
