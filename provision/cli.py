"""``yukimizu device add|remove``: a device's MQTT account, ACL entry and registry row."""

from __future__ import annotations

import argparse
import sys
from typing import cast

from core.config import resolve_config
from provision.devices import ProvisionError, add, remove
from sensors.models import KINDS, Kind


def _columns(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ProvisionError(f"expected column=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def cmd_add(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    try:
        done = add(cfg, cast(Kind, args.kind), args.id, _columns(args.columns), args.lang)
    except ProvisionError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 1
    print(f"added {args.kind} device {done.device_id} to {done.registry_file}")
    print(f"MQTT username: {done.device_id}")
    print(f"MQTT password: {done.password}")
    print("(shown only now: put it into the device)")
    if not done.reloaded:
        print("reload the broker so the account works: systemctl reload mosquitto")
    print("reload ingest's registry: systemctl reload yukimizu-ingest (SIGHUP)")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config)
    try:
        path = remove(cfg, cast(Kind, args.kind), args.id)
    except ProvisionError as exc:
        print(f"yukimizu: {exc}", file=sys.stderr)
        return 1
    print(f"removed {args.kind} device {args.id} from {path} and the MQTT password file")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("device", help="add or remove a device (MQTT account + registry row)")
    s = p.add_subparsers(dest="device_command", required=True)
    a = s.add_parser(
        "add",
        help="create the device's MQTT account and registry row; prints its password once",
        description="Columns as column=value, e.g. district=本町 lat=38.38 lon=140.20",
    )
    a.add_argument("kind", choices=KINDS)
    a.add_argument("id")
    a.add_argument("columns", nargs="*", metavar="column=value")
    a.add_argument(
        "--lang", choices=["ja", "en"], default="ja", help="language of refusals (default ja)"
    )
    a.set_defaults(func=cmd_add)
    r = s.add_parser("remove", help="delete the device's MQTT account and registry row")
    r.add_argument("kind", choices=KINDS)
    r.add_argument("id")
    r.set_defaults(func=cmd_remove)
