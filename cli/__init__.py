"""The ``yukimizu`` command line: one root that composes every package's subcommands.

This is the top of the import graph (see docs/architecture.md#layers): it may import
any package; nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path

from alerts import cli as alerts_cli
from cli import init as init_cli
from core.config import ConfigError
from core.sqlite import StoreError
from dashboards import cli as dashboards_cli
from devtools import cli as devtools_cli
from devtools.localstack import ServiceStartError
from ingest import cli as ingest_cli
from provision import cli as provision_cli
from publicpage import cli as public_cli
from reports import cli as reports_cli
from rules import cli as rules_cli
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
    init_cli.add_parser(sub)
    ingest_cli.add_parsers(sub)
    rules_cli.add_parsers(sub)
    simulators_cli.add_parser(sub)
    devtools_cli.add_parsers(sub)
    alerts_cli.add_parsers(sub)
    dashboards_cli.add_parsers(sub)
    provision_cli.add_parsers(sub)
    reports_cli.add_parsers(sub)
    public_cli.add_parsers(sub)
    return p


# What a shell reports for a command ended by SIGPIPE (128 + 13), as `yes | head` does.
EXIT_BROKEN_PIPE = 141


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe (or socket) whose reading end has closed."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc = int(args.func(args))
        # Flush here, inside the handler: a pipe closed early would otherwise
        # raise at interpreter exit, past every handler.
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        # `yukimizu deadletter list | head`: the reader has what it wanted. The
        # Python docs' recipe (library/signal.html#note-on-sigpipe): point stdout
        # at /dev/null so the exit-time flush stays quiet, and exit like a command
        # killed by SIGPIPE. A broken pipe elsewhere (a socket) is a real error.
        if not _stdout_reader_gone():
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"yukimizu: device registry error: {exc}", file=sys.stderr)
        return 2
    except ServiceStartError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 1
