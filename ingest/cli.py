"""``yukimizu ingest``, ``config check`` and ``deadletter …``: ingest's subcommands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from core import config as core_config
from core.config import Config, load_registry
from core.influx import WriteError, make_writer
from core.publish import publish_many
from core.signals import stop_on_signals
from ingest.deadletter import Content, DeadLetter, DeadLetterStore
from ingest.decode import payload_preview
from ingest.reasons import Reason
from ingest.service import Ingest

log = logging.getLogger(__name__)


def resolve_config(args: argparse.Namespace) -> Config:
    return core_config.resolve_config(getattr(args, "config", None))


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    ingest = Ingest(cfg)
    stop = stop_on_signals(log, "stopping (flush, ack, disconnect)")

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP: reloading the device registry")
        ingest.request_reload()

    signal.signal(signal.SIGHUP, on_hup)
    ingest.run(stop)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
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


def reason_arg(text: str) -> Reason:
    """``--reason`` value: one of :class:`Reason`, else an error listing them all."""
    try:
        return Reason(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown reason {text!r}; valid reasons: {', '.join(Reason)}"
        ) from None


_CONTENT_MEANING = {
    Content.PAYLOAD: "the device's payload as received (replay publishes it to the topic)",
    Content.LINE_PROTOCOL: "one InfluxDB line-protocol point, no device payload (replay "
    "writes it to InfluxDB, never to MQTT)",
    Content.PAYLOAD_HEAD: "only the first bytes of an oversized payload (its size and "
    "sha256 are kept; replay skips it)",
}


def _replay_points(cfg: Config, items: list[DeadLetter]) -> tuple[list[int], list[str]]:
    """Write line-protocol dead letters to InfluxDB, one point at a time.

    One at a time so a point InfluxDB still refuses keeps only itself back. Returns
    (ids written, problems). Stops at the first "InfluxDB not available".
    """
    done: list[int] = []
    problems: list[str] = []
    writer = make_writer(cfg.influx)
    try:
        for d in items:
            try:
                writer.write([d.payload.decode("utf-8")])
            except WriteError as exc:
                problems.append(f"dead letter {d.id}: {exc}")
                if not exc.bad_data:
                    break
            else:
                done.append(d.id)
    finally:
        writer.close()
    return done, problems


def _replay(cfg: Config, store: DeadLetterStore, items: list[DeadLetter], dry_run: bool) -> int:
    payloads = [d for d in items if d.content == Content.PAYLOAD]
    points = [d for d in items if d.content == Content.LINE_PROTOCOL]
    heads = [d.id for d in items if d.content == Content.PAYLOAD_HEAD]
    if heads:
        print(
            f"skipped {len(heads)} dead letters that keep only the head of an oversized "
            f"payload (ids {', '.join(map(str, heads[:20]))}{' …' if len(heads) > 20 else ''})"
        )
    if dry_run:
        for d in payloads:
            print(f"would publish {d.id} to MQTT topic {d.topic}")
        for d in points:
            print(f"would write {d.id} (line protocol) to InfluxDB")
        return 0
    ok = True
    if payloads:
        sent = publish_many(cfg.mqtt, [(d.topic, d.payload) for d in payloads])
        store.delete(ids=[d.id for d in payloads[:sent]])
        print(
            f"replayed {sent} of {len(payloads)} dead letters to MQTT "
            f"{cfg.mqtt.host}:{cfg.mqtt.port}; ingest processes them again "
            f"(still-bad ones come back as new dead letters)"
        )
        ok = sent == len(payloads)
    if points:
        written, problems = _replay_points(cfg, points)
        store.delete(ids=written)
        print(
            f"wrote {len(written)} of {len(points)} line-protocol dead letters to "
            f"{cfg.influx.url} (they have no device payload to publish)"
        )
        for problem in problems:
            print(f"  not written, kept: {problem}", file=sys.stderr)
        ok = ok and len(written) == len(points)
    return 0 if ok else 1


def _dl_list(_cfg: Config, store: DeadLetterStore, args: argparse.Namespace) -> int:
    items = store.list(reason=args.reason, limit=args.limit, newest=True)
    counts = store.counts()
    if not counts:
        print("no dead letters")
        return 0
    print("dead letters by reason: " + ", ".join(f"{r}={n}" for r, n in counts.items()))
    for item in items:
        topic = item.topic or "-"
        if item.content == Content.LINE_PROTOCOL:
            topic += " [line protocol]"
        print(
            f"{item.id:>6}  {_fmt_time(item.time)}  {item.reason:<18} {topic}  {item.detail[:100]}"
        )
    return 0


def _dl_show(_cfg: Config, store: DeadLetterStore, args: argparse.Namespace) -> int:
    d = store.get(args.id)
    if d is None:
        print(f"no dead letter with id {args.id}", file=sys.stderr)
        return 1
    print(f"id:     {d.id}\ntime:   {_fmt_time(d.time)}\ntopic:  {d.topic}")
    print(f"reason: {d.reason}\ndetail: {d.detail}\nsize:   {len(d.payload)} bytes kept")
    if d.size >= 0:
        print(f"received: {d.size} bytes, sha256 {d.sha256}")
    print(f"content: {d.content}: {_CONTENT_MEANING[d.content]}")
    print("point:" if d.content == Content.LINE_PROTOCOL else "payload:")
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(d.payload + b"\n")
    else:
        print(payload_preview(d.payload, limit=64 * 1024))
    return 0


def _dl_replay(cfg: Config, store: DeadLetterStore, args: argparse.Namespace) -> int:
    if not args.ids and not args.reason and not args.all:
        print("say which: dead-letter ids, --reason REASON, or --all", file=sys.stderr)
        return 2
    items = store.list(reason=args.reason, ids=args.ids or None)
    if not items:
        print("nothing to replay")
        return 0
    return _replay(cfg, store, items, args.dry_run)


def _dl_purge(_cfg: Config, store: DeadLetterStore, args: argparse.Namespace) -> int:
    if not args.all and not args.reason and args.older_than_days is None:
        print("say which: --reason REASON, --older-than-days N, or --all", file=sys.stderr)
        return 2
    before = (
        time.time() - args.older_than_days * 86400 if args.older_than_days is not None else None
    )
    n = store.delete(reason=args.reason, before=before)
    print(f"purged {n} dead letters")
    return 0


_DEADLETTER_ACTIONS = {
    "list": _dl_list,
    "show": _dl_show,
    "replay": _dl_replay,
    "purge": _dl_purge,
}


def cmd_deadletter(args: argparse.Namespace) -> int:
    cfg, store = _store(args)
    try:
        return _DEADLETTER_ACTIONS[args.action](cfg, store, args)
    finally:
        store.close()


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ingest's subcommands under the main ``yukimizu`` parser."""
    sp = sub.add_parser("ingest", help="subscribe to MQTT and write readings to InfluxDB")
    sp.set_defaults(func=cmd_ingest)

    sp = sub.add_parser("config", help="validate the config file and the device registry")
    sp.add_argument("action", choices=["check"])
    sp.set_defaults(func=cmd_config_check)

    sp = sub.add_parser("deadletter", help="inspect, replay or purge dead letters")
    dl = sp.add_subparsers(dest="action", required=True)
    reason_help = "one of: " + ", ".join(Reason)
    x = dl.add_parser("list", help="the newest dead letters (oldest of them first)")
    x.add_argument("--reason", type=reason_arg, metavar="REASON", help=reason_help)
    x.add_argument("--limit", type=int, default=50)
    x = dl.add_parser("show", help="show one dead letter with its payload")
    x.add_argument("id", type=int)
    x.add_argument("--raw", action="store_true", help="write the payload bytes unchanged")
    x = dl.add_parser(
        "replay",
        help="payloads: publish again to their original topic; line protocol: write to InfluxDB",
    )
    x.add_argument("ids", type=int, nargs="*")
    x.add_argument("--reason", type=reason_arg, metavar="REASON", help=reason_help)
    x.add_argument("--all", action="store_true")
    x.add_argument("--dry-run", action="store_true")
    x = dl.add_parser("purge", help="delete dead letters")
    x.add_argument("--reason", type=reason_arg, metavar="REASON", help=reason_help)
    x.add_argument("--older-than-days", type=float)
    x.add_argument("--all", action="store_true")
    sp.set_defaults(func=cmd_deadletter)
