"""``yukimizu init DIR``: a commented config and registry templates for a new site.

Registry paths in the config are relative to the config file
(docs/architecture.md#conventions), so the config and its registry files are written
side by side; ``yukimizu -c DIR/yukimizu.toml config check`` passes on the result.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

__all__ = ["FILES", "add_parser", "cmd_init"]

# Written in this order; the config first because it names the others.
FILES = (
    "yukimizu.toml", "stations.csv", "meters.csv", "plows.csv", "routes.geojson", "zones.csv",
)  # fmt: skip


def _template(name: str) -> bytes:
    return resources.files("cli.templates").joinpath(name).read_bytes()


def cmd_init(args: argparse.Namespace) -> int:
    target: Path = args.dir
    if target.exists() and not target.is_dir():
        print(f"yukimizu init: {target} exists and is not a directory", file=sys.stderr)
        return 1
    existing = [target / name for name in FILES if (target / name).exists()]
    if existing and not args.force:
        print(
            "yukimizu init: not overwriting "
            + ", ".join(str(p) for p in existing)
            + " (use --force to replace them)",
            file=sys.stderr,
        )
        return 1
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (target / name).write_bytes(_template(name))
    config = target / "yukimizu.toml"
    print(f"wrote {', '.join(str(target / name) for name in FILES)}")
    print(
        "next steps:\n"
        f"  1. edit {config}: [mqtt] and [influx] for your broker and database, the\n"
        "     [registry] bounding box for your town; secrets go in the environment\n"
        "     (YUKIMIZU_INFLUX__PASSWORD=…), not in the file\n"
        f"  2. replace the example row in {target / 'stations.csv'}, meters.csv and\n"
        "     plows.csv, the example road in routes.geojson and the zone in zones.csv,\n"
        "     with your own\n"
        f"  3. yukimizu -c {config} config check\n"
        f"  4. yukimizu -c {config} ingest   (on a server: deploy/systemd/yukimizu-ingest.service)"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser(
        "init",
        help="write a commented yukimizu.toml and registry templates into DIR",
    )
    sp.add_argument("dir", type=Path, metavar="DIR")
    sp.add_argument("--force", action="store_true", help="replace files that already exist")
    sp.set_defaults(func=cmd_init)
