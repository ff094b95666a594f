"""The ``yukimizu`` command line: one root that composes every package's subcommands.

This is the top of the import graph (see docs/architecture.md#layers): it may import
any package; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import ConfigError
from core.sqlite import StoreError
from devtools.localstack import ServiceStartError
from sensors.registry import RegistryError

__all__ = ["build_parser", "main"]


# Command word → the module that registers it. Only the chosen command's module is
# imported: `yukimizu ingest` must not load pandas, shapely and the rest of the other
# packages (tens of MB of a process that runs all winter; benchmarks/ingest.py).
COMMANDS: dict[str, str] = {
    "init": "cli.init",
    "ingest": "ingest.cli",
    "config": "ingest.cli",
    "deadletter": "ingest.cli",
    "rules": "rules.cli",
    "simulate": "simulators.cli",
    "services": "devtools.cli",
    "demo": "devtools.cli",
    "alerts": "alerts.cli",
    "dashboards": "dashboards.cli",
    "device": "provision.cli",
    "report": "reports.cli",
    "public": "publicpage.cli",
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv`` (skipping the root options and their values)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-c", "--config", "--log-level"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the chosen command's module is loaded."""
    p = argparse.ArgumentParser(prog="yukimizu", description="yukimizu 雪水 telemetry")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML config (default: $YUKIMIZU_CONFIG or config/yukimizu.toml)",
    )
    p.add_argument("--log-level", default=os.environ.get("YUKIMIZU_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)
    word = _command_word(argv) if argv is not None else None
    modules = [COMMANDS[word]] if word in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        module = importlib.import_module(name)
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(sub)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
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
