"""The ``yukimizu`` command line: one root that composes every package's subcommands.

This is the top of the import graph (see docs/architecture.md#layers): it may import
any package; nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from alerts import cli as alerts_cli
from core.config import ConfigError
from devtools import cli as devtools_cli
from devtools.localstack import ServiceStartError
from ingest import cli as ingest_cli
from sensors.registry import RegistryError
from simulators import cli as simulators_cli

__all__ = ["build_parser", "main"]


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
    ingest_cli.add_parsers(sub)
    simulators_cli.add_parser(sub)
    devtools_cli.add_parsers(sub)
    alerts_cli.add_parsers(sub)
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
