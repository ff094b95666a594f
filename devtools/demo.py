"""``yukimizu demo``: the whole pipeline on private local services, fed simulated devices.

Starts Mosquitto and InfluxDB (``yukimizu services up``), starts ingest in the
background, publishes one example of every payload format plus a simulated
scenario, waits until InfluxDB has everything, and prints what arrived, where to
look and how to stop. ``yukimizu demo stop`` stops it all again.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.config import load_alerts_config
from core import nmea
from core.config import Config, load_registry
from core.publish import Publisher
from devtools import localstack as services
from devtools.processes import IngestNotReady, IngestProcess
from publicpage.config import load_public_config
from rules.config import load_rules_config
from rules.model import JST
from rules.state import SqliteState
from rules.transitions import read_outbox
from simulators.run import prefixes_from, publish
from simulators.scenario import DispatchEvent, Scenario, load_scenario
from simulators.stream import Simulation
from simulators.truth import write_truth

log = logging.getLogger(__name__)

MEASUREMENTS = ("snow_depth", "water_meter", "plow_position")
PUBLIC_PORT = 18080
DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "heavy-snow-night.toml"


def _dump(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def example_messages(
    prefix: str, now: datetime, water_before: timedelta = timedelta(0)
) -> list[tuple[str, bytes, str]]:
    """One message of every supported format, timestamped just before ``now``.

    The plows in the examples stand at the depot (parked: no dispatch starts).
        The water examples are ``water_before`` older: a meter's register only grows, so
        examples with made-up registers must lie before a scenario's own readings of the
        same meters (or the rules would rightly see a meter swap).
    """

    def iso(minutes: float) -> str:
        return (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    def w_iso(minutes: float) -> str:
        return iso(minutes + water_before.total_seconds() / 60)

    t = now - timedelta(minutes=1)
    return [
        (
            f"{prefix}/snow/ST02",
            _dump(
                {
                    "time": iso(10),
                    "distance_mm": 2480.0,
                    "air_temp_c": -4.2,
                    "seq": 1,
                    "battery_v": 3.6,
                }
            ),
            "native JSON (raw ultrasonic distance)",
        ),
        (
            f"{prefix}/water/M003",
            _dump(
                {
                    "battery_v": 3.3,
                    "readings": [
                        {"time": w_iso(180), "register_l": 52_310.0},
                        {"time": w_iso(120), "register_l": 52_342.0},
                        {"time": w_iso(60), "register_l": 52_391.0},
                    ],
                }
            ),
            "native batch (hourly register values)",
        ),
        (
            f"{prefix}/water/M002",
            _dump(
                [
                    {
                        "bn": "urn:dev:yukimizu:M002:",
                        "bt": (now - water_before - timedelta(minutes=9)).timestamp(),
                        "n": "volume",
                        "u": "m3",
                        "s": 381.204,
                    },
                    {"n": "battery", "u": "V", "v": 3.4},
                ]
            ),
            "SenML (RFC 8428)",
        ),
        (
            f"{prefix}/plow/P02",
            nmea.sentence(
                f"GPRMC,{t:%H%M%S}.00,A,3822.2830,N,14011.6416,E,0.0,90.0,{t:%d%m%y},,,A"
            ).encode(),
            "NMEA RMC",
        ),
        (
            "application/1/device/70b3d5e4a32ac06f/event/up",
            _dump(
                {
                    "deduplicationId": "5e1e8f2c",
                    "time": w_iso(8),
                    "deviceInfo": {"devEui": "70b3d5e4a32ac06f", "deviceName": "M001"},
                    "fCnt": 1042,
                    "fPort": 2,
                    "object": {"register_l": 1_203_456.0, "battery_v": 3.31},
                    "rxInfo": [{"gatewayId": "0016c001ff10a235", "rssi": -97, "snr": 6.5}],
                }
            ),
            "ChirpStack v4 uplink",
        ),
        (
            "v3/yukimizu@ttn/devices/plow-1/up",
            _dump(
                {
                    "end_device_ids": {"device_id": "plow-1", "dev_eui": "0004A39DF1EC229B"},
                    "received_at": iso(7),
                    "uplink_message": {
                        "f_cnt": 310,
                        "decoded_payload": {
                            "lat": 38.371383,
                            "lon": 140.194027,
                            "speed_kmh": 0.0,
                            "blade_down": False,
                        },
                        "rx_metadata": [{"rssi": -81}],
                    },
                }
            ),
            "The Things Stack v3 uplink",
        ),
    ]


def _pid_file(cfg: Config) -> Path:
    return Path(cfg.services.data_dir) / "ingest.pid"


def _ingest_running(cfg: Config) -> int | None:
    try:
        pid = int(_pid_file(cfg).read_text())
    except (OSError, ValueError):
        return None
    return pid if services.pid_alive(pid) else None


def _influx(cfg: Config) -> services.InfluxDB1:
    port = int(cfg.influx.url.rsplit(":", 1)[1].split("/")[0])
    return services.InfluxDB1(Path(cfg.services.data_dir) / "influxdb", port=port)


def counts(cfg: Config) -> dict[str, int]:
    influx = _influx(cfg)
    out: dict[str, int] = {}
    for m in MEASUREMENTS:
        try:
            rows = influx.series(f'SELECT COUNT(*) FROM "{m}"', cfg.influx.database)
        except services.InfluxError:
            rows = []
        out[m] = max(
            (int(v) for r in rows for k, v in r.items() if k.startswith("count")), default=0
        )
    return out


def start(cfg: Config, config_path: Path | None, scenario: Path | None) -> int:
    s = cfg.services
    missing = services.ensure_installed(["mosquitto", "influxdb"])
    if missing:
        print(f"missing Debian packages: {' '.join(missing)} — run scripts/setup.sh")
        return 1
    print(f"starting Mosquitto :{s.mqtt_port} and InfluxDB :{s.influx_port} under {s.data_dir}")
    services.up(Path(s.data_dir), s.mqtt_port, s.influx_port, vm_port=None)

    pid = _ingest_running(cfg)
    log_path = Path(s.data_dir) / "ingest.log"
    if pid is None:
        # Detached: ingest keeps running after this command; `demo stop` ends it.
        ingest = IngestProcess({}, log_path, config_path=config_path, detach=True, cwd=Path.cwd())
        try:
            pid = ingest.start().pid
        except IngestNotReady as exc:
            print(f"ingest did not start: {exc}")
            return 1
        _pid_file(cfg).write_text(str(pid))
    print(f"ingest running (pid {pid}), log {log_path}")

    before = counts(cfg)
    sc = load_scenario(scenario) if scenario is not None else None
    history = (sc.end - sc.start) + timedelta(days=1) if sc is not None else timedelta(0)
    examples = example_messages(cfg.mqtt.topic_prefix, datetime.now(UTC), history)
    with Publisher(cfg.mqtt) as pub:
        for topic, payload, what in examples:
            pub.publish(topic, payload)
            print(f"  published {what:<40} → {topic}")
    published = len(examples)
    if sc is not None:
        published += _publish_night(cfg, sc)

    # Wait until InfluxDB stops growing (ingest flushes within a second).
    last, stable_since, deadline = counts(cfg), time.monotonic(), time.monotonic() + 300
    while time.monotonic() - stable_since < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now_counts = counts(cfg)
        if now_counts != last:
            last, stable_since = now_counts, time.monotonic()
    dl = subprocess.run(
        [*_cli_argv(config_path), "deadletter", "list", "--limit", "5"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print()
    print(f"published {published} messages; InfluxDB {cfg.influx.url} db={cfg.influx.database}:")
    for m in MEASUREMENTS:
        print(f"  {m:<14} {last[m] - before.get(m, 0):>8} new points ({last[m]} in all)")
    print(f"dead letters: {dl.splitlines()[0] if dl else 'none'}")
    rules_log = Path(s.data_dir) / "rules.log"
    if _start_rules(cfg, config_path, rules_log) != 0:
        return 1
    _start_alerts(cfg, config_path)
    _start_public(cfg, config_path)
    q = "SELECT * FROM snow_depth ORDER BY time DESC LIMIT 5"
    print(
        "\nwhere to look:\n"
        f"  curl -sG {cfg.influx.url}/query --data-urlencode db={cfg.influx.database} "
        f"--data-urlencode 'q={q}'\n"
        f"  influx -port {s.influx_port} -database {cfg.influx.database}   (InfluxQL shell)\n"
        f"  mosquitto_sub -p {s.mqtt_port} -t '{cfg.mqtt.topic_prefix}/#' -v   (live messages)\n"
        f"  .venv/bin/yukimizu deadletter list                (rejected payloads)\n"
        f"  tail -f {log_path}   (ingest log; self-metrics in measurement yukimizu_ingest)\n"
        f"  tail -f {rules_log}   (rules engine log; its state in {_rules_db(cfg)})\n"
        f"  .venv/bin/yukimizu rules check      (what fires now)\n"
        "to stop:  .venv/bin/yukimizu demo stop"
    )
    return 0


def _background(cfg: Config, name: str, argv: list[str], log_path: Path) -> int:
    """Start a detached helper process once (pid file ``services.data_dir/NAME.pid``)."""
    pid_file = Path(cfg.services.data_dir) / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
        if services.pid_alive(pid):
            return pid
    except (FileNotFoundError, ValueError):
        pass
    with log_path.open("ab") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def _stop_background(cfg: Config, name: str) -> None:
    pid_file = Path(cfg.services.data_dir) / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    if services.pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while services.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"{name} (pid {pid}) stopped")
    pid_file.unlink(missing_ok=True)


def _cli_argv(config_path: Path | None) -> list[str]:
    return [sys.executable, "-m", "cli", *(["-c", str(config_path)] if config_path else [])]


def _start_alerts(cfg: Config, config_path: Path | None) -> None:
    """A local SMTP server writing to a mailbox folder, and ``yukimizu alerts run``;
    then wait for the dispatch notice to arrive and say where to read it."""
    acfg = load_alerts_config(cfg)
    mail_dir = Path(cfg.services.data_dir).parent / "mail"
    smtp = acfg.defaults.get("email", {})
    host, port = str(smtp.get("host", "127.0.0.1")), int(smtp.get("port", 18025))
    data = Path(cfg.services.data_dir)
    _background(
        cfg,
        "smtp",
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"{host}:{port}",
            "-c",
            "aiosmtpd.handlers.Mailbox",
            str(mail_dir),
        ],
        data / "smtp.log",
    )
    log_path = data / "alerts.log"
    pid = _background(cfg, "alerts", [*_cli_argv(config_path), "alerts", "run"], log_path)
    print(f"\nalerts service running (pid {pid}), log {log_path}; local mailbox {mail_dir}")
    new = mail_dir / "new"
    deadline = time.monotonic() + 60
    seen: list[Path] = []
    while time.monotonic() < deadline:
        seen = sorted(new.glob("*")) if new.is_dir() else []
        if any("除雪" in _subject(m) for m in seen):
            break
        time.sleep(0.5)
    for m in seen:
        print(f"  mail: {_subject(m)}  ({m})")
    if not seen:
        print(f"  no notice in the mailbox yet; see {log_path}")


def _subject(path: Path) -> str:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return str(msg.get("Subject", ""))


def _start_public(cfg: Config, config_path: Path | None) -> None:
    """Build the residents' page from the demo's data and serve it locally."""
    out = load_public_config(cfg).out_dir
    build = subprocess.run(
        [*_cli_argv(config_path), "public", "build", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        print(f"public page not built: {build.stderr.strip()[-500:]}")
        return
    data = Path(cfg.services.data_dir)
    _background(
        cfg,
        "public",
        [*_cli_argv(config_path), "public", "serve", str(out), "--port", str(PUBLIC_PORT)],
        data / "public.log",
    )
    # Say where the page is once it answers: a URL printed before the server listens
    # is refused if opened at once.
    deadline = time.monotonic() + 10
    while not services.port_open("127.0.0.1", PUBLIC_PORT) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not services.port_open("127.0.0.1", PUBLIC_PORT):
        print(f"\nresidents' plowing page not serving yet; see {data / 'public.log'}")
        return
    print(
        f"\nresidents' plowing page (除雪状況): http://127.0.0.1:{PUBLIC_PORT}/  (files in {out})"
    )


def _publish_night(cfg: Config, sc: Scenario) -> int:
    """The night as it stands 25 minutes after the plows went out: the dispatch call is
    still on (so the alerts service notifies it) and the plowing is under way. Shifted
    so that this moment is now: dashboards and the public page show it."""
    sc = _until_plowing(sc)
    start_at = datetime.now(UTC).replace(microsecond=0) - (sc.end - sc.start)
    sc = sc.shifted_to(start_at - timedelta(minutes=2))
    truth = Path(cfg.services.data_dir) / "truth" / sc.name
    print(f"simulating {sc.name} ({sc.description}) as fast as possible,")
    print(f"  up to {sc.end.astimezone(JST):%H:%M} JST (now); ground truth in {truth}")
    sim = Simulation(sc, load_registry(cfg), None, prefixes_from(cfg))
    write_truth(sim.world, truth, sim.format)
    summary = publish(sim, cfg)
    print(f"  {summary.describe()}")
    return summary.messages


def _until_plowing(sc: Scenario) -> Scenario:
    """The scenario cut 25 minutes after its first dispatch (whole if it has none)."""
    dispatches = sorted(e.at for e in sc.events if isinstance(e, DispatchEvent))
    if not dispatches:
        return sc
    return sc.model_copy(update={"end": min(sc.end, dispatches[0] + timedelta(minutes=25))})


def _rules_db(cfg: Config) -> Path:
    return load_rules_config(cfg).state_dir / "rules.sqlite"


def _rules_pid_file(cfg: Config) -> Path:
    return Path(cfg.services.data_dir) / "rules.pid"


def _rules_running(cfg: Config) -> int | None:
    try:
        pid = int(_rules_pid_file(cfg).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if services.pid_alive(pid) else None


def _start_rules(cfg: Config, config_path: Path | None, log_path: Path) -> int:
    """Start ``yukimizu rules run`` (detached) and wait for its first evaluation; then
    print what fired, and when, and the plowing progress."""
    db = _rules_db(cfg)
    pid = _rules_running(cfg)
    if pid is None:
        argv = [sys.executable, "-m", "cli", *(["-c", str(config_path)] if config_path else [])]
        with log_path.open("ab") as logf:
            proc = subprocess.Popen(
                [*argv, "rules", "run"],
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = proc.pid
        _rules_pid_file(cfg).write_text(str(pid))
    started = time.monotonic()
    print(f"\nrules engine running (pid {pid}), log {log_path}; evaluating the data…")
    while True:
        if db.exists() and SqliteState(db).load().last_cycle_ms is not None:
            break
        if not services.pid_alive(pid) or time.monotonic() - started > 300:
            print(f"the rules engine did not evaluate; see {log_path}:")
            print(log_path.read_text(encoding="utf-8", errors="replace")[-2000:])
            return 1
        time.sleep(0.5)
    transitions = [t for _i, t in read_outbox(db).transitions]
    transitions.sort(key=lambda t: t.event_time)
    shown = [t for t in transitions if t.severity.value != "info"]
    print(f"what the rules decided ({len(transitions)} transitions, info-level ones not shown):")
    for t in shown[-40:]:
        print(f"  {t.line()}")
    _print_dispatches(cfg)
    return 0


def _print_dispatches(cfg: Config) -> None:
    try:
        rows = _influx(cfg).series(
            'SELECT LAST("state") AS state, LAST("priority_done") AS done, '
            'LAST("priority_total") AS total, LAST("work_time_s") AS work_s, '
            'LAST("started_s") AS started FROM "dispatch" GROUP BY "dispatch_id"',
            cfg.influx.database,
        )
    except services.InfluxError as exc:
        print(f"  (no plowing progress: {exc})")
        return
    for r in rows:
        work = f", 除雪作業時間 {r['work_s'] / 3600:.1f} h" if r.get("work_s") else ""
        progress = f"優先路線 {r['done']}/{r['total']} 完了"
        print(f"  除雪 {r['dispatch_id']}: {r['state']} — {progress}{work}")


def stop(cfg: Config) -> int:
    for name in ("public", "alerts", "smtp"):
        _stop_background(cfg, name)
    rules_pid = _rules_running(cfg)
    if rules_pid is not None:
        os.kill(rules_pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while services.pid_alive(rules_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"rules (pid {rules_pid}) stopped")
    _rules_pid_file(cfg).unlink(missing_ok=True)
    pid = _ingest_running(cfg)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + cfg.ingest.shutdown_timeout_s + 5
        while services.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"ingest (pid {pid}) stopped")
    _pid_file(cfg).unlink(missing_ok=True)
    stopped = services.down(Path(cfg.services.data_dir))
    print(f"services stopped: {', '.join(stopped) or 'none running'}")
    return 0
