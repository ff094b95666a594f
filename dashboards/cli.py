"""``yukimizu dashboards build [--check] [--out DIR]`` (also ``python -m dashboards``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import load_registry, resolve_config
from dashboards.build import DEPLOY, build, differences


def cmd_build(args: argparse.Namespace) -> int:
    cfg = resolve_config(getattr(args, "config", None))
    registry = load_registry(cfg)
    out: Path = args.out
    if args.check:
        bad = differences(cfg, registry, out)
        for line in bad:
            print(line, file=sys.stderr)
        if bad:
            print("run `yukimizu dashboards build` and commit the result", file=sys.stderr)
            return 1
        print(f"dashboards in {out} match the generator")
        return 0
    written = build(cfg, registry, out)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} file(s) changed under {out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboards", help="Grafana dashboards (provisioned JSON)")
    s = p.add_subparsers(dest="dashboards_command", required=True)
    b = s.add_parser(
        "build",
        help="regenerate deploy/grafana/dashboards and gazetteers from the registry",
    )
    b.add_argument("--out", type=Path, default=DEPLOY, help=f"default: {DEPLOY}")
    b.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    b.set_defaults(func=cmd_build)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboards")
    p.add_argument("-c", "--config", type=Path)
    sub = p.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = p.parse_args(["dashboards", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))
