"""Add and remove a device in one step: MQTT account, ACL entry, registry row.

``yukimizu device add KIND ID [column=value …]``:

0. refuses an id that cannot be a device's MQTT account: not the registry's id
   pattern, a service account's name (ingest, operator, …, the configured
   ``mqtt.username``), ingest's client id (on the device listener the client id is
   the username), or an account already in the password files or the ACL (``device
   add`` never overwrites an account: that would lock out ingest and hand its
   rights to the new "device");
1. builds the registry file with the new row and validates the whole registry
   (nothing is written if it is refused: the error names the column);
2. creates the device's MQTT account with ``mosquitto_passwd -b`` and a generated
   password (printed once, never stored in clear);
3. with ``provision.acl_file`` set, appends a per-user ACL entry (the bundled ACL
   needs none: its ``pattern write yukimizu/+/%u`` covers every device);
4. writes the registry row;
5. runs ``provision.reload_command`` (e.g. ``systemctl reload mosquitto``):
   Mosquitto rereads its password and ACL files on SIGHUP, so the device can
   publish at once. Ingest needs its own SIGHUP to reload the registry.

``device remove KIND ID`` undoes all of it. README "Securing the broker".
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from core.config import Config, config_path, validate_section
from sensors.models import Kind
from sensors.registry import BBox, Registry, RegistryError


class ProvisionError(RuntimeError):
    """A device could not be added or removed; nothing half-done is left behind."""


Lang = Literal["ja", "en"]

# The registry's id pattern (sensors/registry.py; a test keeps them equal): ids become
# MQTT usernames, topic levels and InfluxDB tag values.
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Accounts the services use (deploy/mosquitto/acl), never a device's name, in any case.
SERVICE_ACCOUNTS: Final = frozenset({"ingest", "operator", "chirpstack"})


def _refusal(lang: Lang, ja: str, en: str) -> ProvisionError:
    return ProvisionError(ja if lang == "ja" else en)


class ProvisionConfig(BaseModel):
    """``[provision]``: where the broker's account files are (relative paths: to the
    config file's directory)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    password_file: Path = Path("/etc/mosquitto/passwd")  # device accounts (written)
    # service accounts (read only: a device id found here is refused); skipped when
    # the file does not exist
    services_password_file: Path | None = Path("/etc/mosquitto/services.passwd")
    acl_file: Path | None = None  # only for per-user ACL entries
    mosquitto_passwd: str = "mosquitto_passwd"
    reload_command: list[str] = []  # e.g. ["systemctl", "reload", "mosquitto"]


def provision_config(cfg: Config) -> ProvisionConfig:
    pc = validate_section("provision", cfg.provision, ProvisionConfig)
    return pc.model_copy(
        update={
            "password_file": config_path(cfg, pc.password_file),
            "services_password_file": (
                config_path(cfg, pc.services_password_file) if pc.services_password_file else None
            ),
            "acl_file": config_path(cfg, pc.acl_file) if pc.acl_file else None,
        }
    )


def _password_users(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc}") from None
    return {line.partition(":")[0] for line in text.splitlines() if ":" in line}


def _acl_users(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    users = set()
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[0] == "user":
            users.add(words[1].strip())
    return users


def check_new_id(cfg: Config, pc: ProvisionConfig, device_id: str, lang: Lang = "ja") -> None:
    """Refuse an id that is not a valid device id or whose MQTT account exists or
    belongs to a service (module docstring, step 0)."""
    if not ID_PATTERN.fullmatch(device_id):
        raise _refusal(
            lang,
            f"機器ID {device_id!r} は使えません: 英数字で始まり、英数字と '_' '-' '.' だけに"
            "してください (MQTT のユーザー名・トピックと InfluxDB のタグになります)。",
            f"device id {device_id!r} is not valid: it must start with a letter or digit "
            "and contain only letters, digits, '_', '-' and '.' (it becomes an MQTT "
            "username, a topic level and an InfluxDB tag).",
        )
    services = {*SERVICE_ACCOUNTS, *([cfg.mqtt.username] if cfg.mqtt.username else [])}
    if device_id.lower() in {s.lower() for s in services}:
        raise _refusal(
            lang,
            f"機器ID {device_id!r} はサービスアカウントの名前なので使えません"
            f" (予約: {', '.join(sorted(services))})。別のIDにしてください。",
            f"device id {device_id!r} is a service account's name (reserved: "
            f"{', '.join(sorted(services))}); choose another id.",
        )
    if device_id.lower() == cfg.mqtt.client_id.lower():
        raise _refusal(
            lang,
            f"機器ID {device_id!r} は ingest の MQTT クライアントID (mqtt.client_id) と"
            "同じなので使えません。機器のクライアントIDはユーザー名になるため、ingest を"
            "切断できてしまいます。",
            f"device id {device_id!r} is ingest's MQTT client id (mqtt.client_id): a "
            "device's client id is its username, so it could disconnect ingest.",
        )
    files = [("password", pc.password_file)]
    if pc.services_password_file is not None:
        files.append(("service password", pc.services_password_file))
    for what, path in files:
        if device_id in _password_users(path):
            raise _refusal(
                lang,
                f"機器ID {device_id!r} のアカウントは MQTT パスワードファイル {path} に"
                "すでにあります。上書きしません (同じ機器を登録し直すなら先に "
                "`yukimizu device remove`)。",
                f"device id {device_id!r} already has an account in the MQTT {what} file "
                f"{path}; not overwritten (to re-add the same device, run "
                "`yukimizu device remove` first).",
            )
    if pc.acl_file is not None and device_id in _acl_users(pc.acl_file):
        raise _refusal(
            lang,
            f"機器ID {device_id!r} は ACL {pc.acl_file} にすでにユーザーとしてあります。"
            "上書きしません。",
            f"device id {device_id!r} is already a user in the ACL {pc.acl_file}; not overwritten.",
        )


def registry_path(cfg: Config, kind: Kind) -> Path:
    r = cfg.registry
    return {"snow": r.stations, "water": r.meters, "plow": r.plows}[kind]


def _bbox(cfg: Config) -> BBox:
    r = cfg.registry
    return BBox(lat_min=r.lat_min, lat_max=r.lat_max, lon_min=r.lon_min, lon_max=r.lon_max)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    text = path.read_text(encoding="utf-8-sig")
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    if not rows:
        raise ProvisionError(f"{path}: empty registry file (no header)")
    return rows[0], rows[1:]


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _validated(cfg: Config, kind: Kind, text: str) -> Registry:
    """The registry as it would be with ``text`` as this kind's file."""
    r = cfg.registry
    paths = {"snow": r.stations, "water": r.meters, "plow": r.plows}
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / paths[kind].name
        candidate.write_text(text, encoding="utf-8")
        paths[kind] = candidate
        return Registry.load(
            paths["snow"], paths["water"], paths["plow"], r.routes, bbox=_bbox(cfg)
        )


def _replace(path: Path, text: str) -> None:
    """Atomic: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run(argv: list[str], what: str) -> None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ProvisionError(f"{what}: {argv[0]} not found (apt-get install mosquitto)") from None
    if res.returncode != 0:
        raise ProvisionError(
            f"{what}: {argv[0]} exited {res.returncode}: {(res.stderr or res.stdout).strip()}"
        )


def _acl_entry(cfg: Config, kind: Kind, device_id: str) -> str:
    return f"user {device_id}\ntopic write {cfg.mqtt.topic_prefix}/{kind}/{device_id}\n"


@dataclass
class Added:
    device_id: str
    password: str
    registry_file: Path
    reloaded: bool


def add(
    cfg: Config, kind: Kind, device_id: str, columns: dict[str, Any], lang: Lang = "ja"
) -> Added:
    pc = provision_config(cfg)
    check_new_id(cfg, pc, device_id, lang)
    path = registry_path(cfg, kind)
    header, rows = _read_rows(path)
    unknown = sorted(set(columns) - set(header) - {"id"})
    if unknown:
        raise ProvisionError(f"{path}: no column {unknown}; columns: {', '.join(header)}")
    row = [device_id if col == "id" else str(columns.get(col, "")) for col in header]
    text = _csv_text(header, [*rows, row])
    try:
        _validated(cfg, kind, text)
    except RegistryError as exc:
        raise ProvisionError(f"device not added: {exc}") from None
    if not pc.password_file.exists():
        raise ProvisionError(
            f"MQTT password file {pc.password_file} does not exist "
            "(provision.password_file; create it as README 'Securing the broker' says)"
        )
    password = secrets.token_urlsafe(18)
    _run(
        [pc.mosquitto_passwd, "-b", str(pc.password_file), device_id, password],
        "MQTT account",
    )
    if pc.acl_file is not None:
        with pc.acl_file.open("a", encoding="utf-8") as f:
            f.write("\n" + _acl_entry(cfg, kind, device_id))
    _replace(path, text)
    reloaded = False
    if pc.reload_command:
        _run(pc.reload_command, "broker reload")
        reloaded = True
    return Added(device_id, password, path, reloaded)


def remove(cfg: Config, kind: Kind, device_id: str) -> Path:
    pc = provision_config(cfg)
    path = registry_path(cfg, kind)
    header, rows = _read_rows(path)
    id_col = header.index("id") if "id" in header else 0
    kept = [r for r in rows if r[id_col].strip() != device_id]
    if len(kept) == len(rows):
        raise ProvisionError(f"{device_id} is not in {path}")
    _run([pc.mosquitto_passwd, "-D", str(pc.password_file), device_id], "MQTT account")
    if pc.acl_file is not None and pc.acl_file.exists():
        acl = pc.acl_file.read_text(encoding="utf-8")
        _replace(pc.acl_file, acl.replace("\n" + _acl_entry(cfg, kind, device_id), ""))
    _replace(path, _csv_text(header, kept))
    if pc.reload_command:
        _run(pc.reload_command, "broker reload")
    return path
