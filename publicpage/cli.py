"""``yukimizu public build | run | serve``."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

from core.config import Config, load_registry, resolve_config
from core.httpserve import Limits
from core.influxql import InfluxQuery, QueryError
from core.signals import stop_on_signals
from publicpage.build import build
from publicpage.config import PublicConfig, load_public_config
from publicpage.push import PushStore
from publicpage.pushsend import Sender, application_server_key, load_vapid, send_round
from publicpage.pushserve import PushEndpoint
from publicpage.serve import make_server
from publicpage.snapshot import JST, Snapshot, now_ms

log = logging.getLogger(__name__)


def _time(text: str) -> int:
    """ISO 8601 with an offset, or 'now' → epoch ms."""
    if text == "now":
        return now_ms()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +09:00")
    return int(dt.timestamp() * 1000)


def _setup(args: argparse.Namespace) -> tuple[Config, PublicConfig, Path]:
    cfg = resolve_config(getattr(args, "config", None))
    pcfg = load_public_config(cfg)
    out = args.out if args.out is not None else pcfg.out_dir
    return cfg, pcfg, out


def _build_once(cfg: Config, pcfg: PublicConfig, out: Path, at_ms: int) -> Snapshot:
    client = InfluxQuery(cfg.influx)
    try:
        snap = build(pcfg, load_registry(cfg), client, out, at_ms)
    finally:
        client.close()
    log.info(
        "public: built %s as of %s (%d segments, %d plows shown, stale=%s)",
        out,
        datetime.fromtimestamp(at_ms / 1000, JST).isoformat(),
        len(snap.segments),
        len(snap.plows),
        snap.stale(pcfg.stale_after_s),
    )
    return snap


def cmd_build(args: argparse.Namespace) -> int:
    cfg, pcfg, out = _setup(args)
    try:
        _build_once(cfg, pcfg, out, args.at if args.at is not None else now_ms())
    except QueryError as exc:
        print(f"yukimizu public: {exc}")
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg, pcfg, out = _setup(args)
    stop = stop_on_signals(log, "stopping")
    push = None
    if pcfg.push.vapid_key_file is not None:
        push = (PushStore(pcfg.push.store), Sender(load_vapid(pcfg.push.vapid_key_file), pcfg.push))
    while not stop.is_set():
        try:
            at = now_ms()
            snap = _build_once(cfg, pcfg, out, at)
        except QueryError as exc:
            # The previous files stay in place; the page itself shows their age.
            log.warning("public: build failed, previous files kept: %s", exc)
        else:
            if push is not None:
                try:
                    counts = send_round(push[0], snap.segments, at, push[1], pcfg.push)
                except sqlite3.Error as exc:  # the next round tries again
                    log.warning("public: push store: %s", exc)
                else:
                    if +counts:
                        log.info("public: push notices %s", dict(+counts))
        # Aligned to the interval, like the rules engine, so builds follow its cycles.
        step = pcfg.interval_s
        stop.wait(step - time.time() % step + 5)
    return 0


def _push_endpoint(pcfg: PublicConfig) -> tuple[PushEndpoint, PushStore] | None:
    if pcfg.push.vapid_key_file is None:
        return None
    vapid = load_vapid(pcfg.push.vapid_key_file)
    store = PushStore(pcfg.push.store)
    return PushEndpoint(pcfg.push, store, application_server_key(vapid)), store


def cmd_serve(args: argparse.Namespace) -> int:
    limits = Limits(server_name="yukimizu-public", max_connections=args.max_connections)
    pcfg = load_public_config(resolve_config(getattr(args, "config", None)))
    push = _push_endpoint(pcfg)
    server = make_server(args.dir, args.host, args.port, limits, push[0] if push else None)
    log.info(
        "public: serving %s on http://%s:%d/ (at most %d connections)",
        args.dir,
        args.host,
        server.server_port,
        server.http.max_connections,
    )
    if push:
        log.info("public: Web Push subscriptions at /push/, stored in %s", pcfg.push.store)
    print(f"serving {args.dir} on http://{args.host}:{server.server_port}/", flush=True)
    stop = stop_on_signals(log, "stopping")

    # The handler only sets the event; shutdown() waits for serve_forever() to return,
    # so it runs in a thread of its own, never in the handler.
    def shutdown_on_stop() -> None:
        stop.wait()
        server.shutdown()

    threading.Thread(target=shutdown_on_stop, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if push:
            push[1].close()
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("public", help="the residents' plowing map (static files)")
    psub = p.add_subparsers(dest="public_command", required=True)
    b = psub.add_parser("build", help="build the page and feed once")
    b.add_argument("--out", type=Path, help="output directory (default: public.out_dir)")
    b.add_argument("--at", type=_time, help="as of this time (ISO 8601 with offset; default now)")
    b.set_defaults(func=cmd_build)
    r = psub.add_parser("run", help="build every public.interval_s until SIGTERM")
    r.add_argument("--out", type=Path, help="output directory (default: public.out_dir)")
    r.set_defaults(func=cmd_run)
    s = psub.add_parser("serve", help="serve a built directory (local use)")
    s.add_argument("dir", type=Path)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections at most (default: the open-file limit minus 64)",
    )
    s.set_defaults(func=cmd_serve)
