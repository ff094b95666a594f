"""The deployable stack: docker-compose.yml, the Dockerfile, and the broker's security
(deploy/mosquitto/*) on a real Mosquitto: passwords, the ACL, TLS, device accounts.

Docker cannot run here: the compose file is validated by docker-compose itself and
checked against the repository; the Mosquitto configurations it and a town server use
run on a real broker with only their paths and ports made local.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.config import load_config
from core.publish import Publisher, PublishError
from devtools.localstack import InfluxDB1, Mosquitto, free_port
from tests.conftest import (
    REPO,
    SAMPLE_CONFIG,
    IngestThread,
    count,
    make_config,
    running_ingest,
    wait_for,
)
from tests.test_dashboards import yaml_file

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"


# ----------------------------------------------------------------------------- compose


SECRETS = ("INFLUX_PASSWORD", "INFLUX_TOKEN", "MQTT_INGEST_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("INFLUX", "MQTT", "GRAF"))},
    )


def _filled_env(tmp_path: Path, **values: str) -> Path:
    """.env.example with every secret set (``values`` override single variables)."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key = line.partition("=")[0].strip()
        if key in SECRETS:
            lines.append(f"{key}={values.get(key, f'test-{key.lower()}-x9')}")
        else:
            lines.append(line)
    env = tmp_path / "filled.env"
    env.write_text("\n".join(lines) + "\n")
    return env


def test_compose_validates_once_every_secret_is_set(tmp_path: Path) -> None:
    out = _compose_config(_filled_env(tmp_path))
    assert out.returncode == 0, out.stderr


def test_compose_refuses_the_example_env_as_it_is() -> None:
    """Copying .env.example without filling in the secrets does not start a stack
    with well-known passwords on 8883 and 3000 (issue 15: it used to)."""
    out = _compose_config(ENV_EXAMPLE)
    assert out.returncode != 0
    assert re.search(
        r"set (INFLUX_PASSWORD|INFLUX_TOKEN|MQTT_INGEST_PASSWORD|GRAFANA_ADMIN_PASSWORD) in \.env",
        out.stderr,
    ), out.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_names_each_secret_left_as_placeholder(tmp_path: Path, secret: str) -> None:
    out = _compose_config(_filled_env(tmp_path, **{secret: ""}))
    assert out.returncode != 0
    assert f"set {secret} in .env" in out.stderr, out.stderr


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = _compose_config(empty)
    assert out.returncode != 0 and "in .env" in out.stderr


def test_example_env_holds_no_secret_value() -> None:
    values = _env_example()
    for secret in (*SECRETS, "MQTT_OPERATOR_PASSWORD"):
        assert values[secret] == "", f"{secret} has a value in .env.example"


def test_dot_env_is_ignored_by_git() -> None:
    out = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False, capture_output=True
    )
    assert out.returncode == 0, ".env is not in .gitignore"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("secret", [*SECRETS, "MQTT_OPERATOR_PASSWORD"])
def test_mqtt_init_refuses_an_old_placeholder(tmp_path: Path, secret: str) -> None:
    """An .env copied from an older example (CHANGE-ME-… values passes `config`):
    mqtt-init, which every other service waits for, stops with the variable's name."""
    env = {f"{s}": "good-secret-x9" for s in SECRETS}
    env[secret] = "CHANGE-ME-some-password"
    out = subprocess.run(
        ["sh", str(REPO / "deploy" / "mosquitto" / "init-passwd.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "MQTT_AUTH_DIR": str(tmp_path), **env},
    )
    assert out.returncode != 0
    assert f"refused: {secret} in .env is still the placeholder" in out.stderr, out.stderr
    assert not (tmp_path / "services.passwd").exists()


def test_mqtt_init_moves_service_accounts_off_the_device_file(tmp_path: Path) -> None:
    devices = tmp_path / "passwd"
    devices.touch()
    for user in ("ingest", "ST01"):  # an older layout: one file for everything
        subprocess.run(["mosquitto_passwd", "-b", str(devices), user, "pw"], check=True)
    out = subprocess.run(
        ["sh", str(REPO / "deploy" / "mosquitto" / "init-passwd.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ["PATH"],
            "MQTT_AUTH_DIR": str(tmp_path),
            "MQTT_INGEST_PASSWORD": "ingest-secret",
            "MQTT_OPERATOR_PASSWORD": "op-secret",
        },
    )
    assert out.returncode == 0, out.stderr
    users = {ln.partition(":")[0] for ln in devices.read_text().splitlines()}
    assert users == {"ST01"}
    services = (tmp_path / "services.passwd").read_text().splitlines()
    assert {ln.partition(":")[0] for ln in services} == {"ingest", "operator"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_compose_references_exist() -> None:
    text = COMPOSE.read_text()
    compose = yaml_file(COMPOSE)
    documented = _env_example()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used <= set(documented), f"document {sorted(used - set(documented))} in .env.example"
    for name, svc in compose["services"].items():
        if "build" in svc:
            ctx = REPO / (
                svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            )
            assert (ctx / "Dockerfile").is_file(), name
        image = svc.get("image", "")
        assert image, f"{name}: no image"
        if not image.startswith("yukimizu:"):
            tag = image.rpartition(":")[2]
            assert ":" in image and tag not in ("latest", ""), f"{name}: pin {image}"
        assert svc.get("restart"), f"{name}: restart policy"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in compose["volumes"], f"{name}: {src} is not a named volume"
        for var in svc.get("environment", {}):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", var), var
    for name in ("mosquitto", "influxdb", "grafana"):
        assert "healthcheck" in compose["services"][name], name
    # the image the build produces is the one the other services run
    assert compose["services"]["ingest"]["image"] == "yukimizu:local"
    # secrets never have a default in the compose file: every use requires a value
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}(:?.)", text)
        assert uses and set(uses) == {":?"}, (secret, uses)
    # nothing starts before mqtt-init has refused placeholder secrets
    for name in ("mosquitto", "influxdb", "grafana"):
        deps = compose["services"][name]["depends_on"]
        assert deps["mqtt-init"]["condition"] == "service_completed_successfully", name


def test_dockerfile_copies_every_package() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = set(re.findall(r"^COPY (\w+) \1$", (REPO / "Dockerfile").read_text(), re.M))
    assert packages <= copied, f"Dockerfile does not copy {sorted(packages - copied)}"
    for pkg in copied:
        assert (REPO / pkg).is_dir(), pkg


# ----------------------------------------------------------------------------- broker


@dataclass
class Broker:
    svc: Mosquitto  # svc.port: the services listener (1883 in the shipped files)
    tls_port: int  # the device listener (8883)
    passwd: Path  # device accounts (`yukimizu device add` writes here)
    services_passwd: Path  # service accounts (ingest, operator)
    certs: Path
    name: str

    def device(self, user: str, pw: str, **kw: Any) -> Client:
        """A client on the device listener, over TLS, as a device connects."""
        return Client(self.tls_port, user, pw, ca=self.certs / "ca.crt", host="localhost", **kw)


def make_certs(host: str, out: Path) -> Path:
    subprocess.run(
        ["sh", str(REPO / "deploy" / "mosquitto" / "make-certs.sh"), host, str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def local_conf(
    conf: str, *, name: str, data: Path, passwd: Path, services: Path, certs: Path, tls: int
) -> str:
    """A deploy/mosquitto configuration with local paths and ports, nothing else changed."""
    acl = REPO / "deploy" / "mosquitto" / "acl"
    if name == "docker":
        paths = {
            "/mosquitto/auth/services.passwd": str(services),
            "/mosquitto/auth/passwd": str(passwd),
            "/mosquitto/config/acl": str(acl),
            "/mosquitto/data/": f"{data}/",
            "/mosquitto/certs/": f"{certs}/",
        }
    else:
        paths = {
            "/etc/mosquitto/services.passwd": str(services),
            "/etc/mosquitto/passwd": str(passwd),
            "/etc/mosquitto/yukimizu.acl": str(acl),
            "/etc/mosquitto/certs/": f"{certs}/",
        }
    for a, b in paths.items():
        assert a in conf, f"{name}: {a} not in the configuration"
        conf = conf.replace(a, b)
    conf = re.sub(r"^listener 1883( 127\.0\.0\.1)?$", "listener {port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^listener 8883$", f"listener {tls} 127.0.0.1", conf, flags=re.M)
    if name == "town":  # a conf.d drop-in: Debian's main file sets the location
        conf += f"\npersistence_location {data}/\n"
    return conf


SHIPPED = {"docker": "mosquitto.conf", "town": "town-server.conf"}


def start_broker(name: str, tmp: Path) -> Broker:
    """The shipped configuration ``name`` on a real Mosquitto: services ingest and
    operator, devices ST01 and ST02."""
    tmp.mkdir(parents=True, exist_ok=True)
    passwd = tmp / "passwd"
    services = tmp / "services.passwd"
    for f, accounts in (
        (services, (("ingest", "ingest-pw"), ("operator", "operator-pw"))),
        (passwd, (("ST01", "st01-pw"), ("ST02", "st02-pw"))),
    ):
        f.touch()
        for user, pw in accounts:
            subprocess.run(["mosquitto_passwd", "-b", str(f), user, pw], check=True)
    certs = make_certs("localhost", tmp / "certs")
    src = REPO / "deploy" / "mosquitto" / SHIPPED[name]
    tls = free_port()
    conf = local_conf(
        src.read_text(),
        name=name,
        data=tmp,
        passwd=passwd,
        services=services,
        certs=certs,
        tls=tls,
    )
    svc = Mosquitto(tmp / "svc", conf=conf)
    svc.start()
    return Broker(svc, tls, passwd, services, certs, name)


@pytest.fixture(scope="module", params=["docker", "town"])
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    b = start_broker(request.param, tmp_path_factory.mktemp(f"broker-{request.param}"))
    try:
        yield b
    finally:
        b.svc.stop()


class Client:
    """A small paho v5 client for the test: connect, subscribe, publish QoS 1."""

    def __init__(
        self,
        port: int,
        user: str | None,
        pw: str | None,
        *,
        ca: Path | None = None,
        host: str = "127.0.0.1",
        client_id: str = "",
        clean_start: bool = True,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.disconnected = threading.Event()
        self.connected = threading.Event()
        self.reason: Any = None
        self.suback: list[Any] = []
        self.puback: dict[int, Any] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, pw)
        if ca is not None:
            c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.suback.extend(codes)
        c.on_publish = lambda _c, _u, mid, reason, _p: self.puback.__setitem__(mid, reason)
        c.on_disconnect = lambda *_a: self.disconnected.set()
        self.c = c
        c.connect(host, port, keepalive=30, clean_start=clean_start)
        c.loop_start()
        deadline = time.monotonic() + 10
        while self.reason is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        if not reason.is_failure:
            self.connected.set()

    def subscribe(self, topic: str) -> Any:
        self.c.subscribe(topic, qos=1)
        wait_for(lambda: self.suback, timeout_s=10, what=f"SUBACK {topic}")
        return self.suback[-1]

    def publish(self, topic: str, payload: bytes) -> Any:
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.puback, timeout_s=10, what=f"PUBACK {topic}")
        return self.puback[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def reading() -> bytes:
    return json.dumps({"time": datetime.now(UTC).isoformat(), "depth_cm": 3.0}).encode()


def test_anonymous_and_wrong_passwords_are_refused(broker: Broker) -> None:
    for user, pw in ((None, None), ("ingest", "wrong"), ("nobody", "x")):
        c = Client(broker.svc.port, user, pw)
        try:
            assert c.reason is not None and c.reason.is_failure, (user, c.reason)
            assert not c.connected.is_set()
        finally:
            c.close()
    for user, pw in ((None, None), ("ST01", "wrong"), ("nobody", "x")):
        c = broker.device(user, pw)  # type: ignore[arg-type]
        try:
            assert c.reason is not None and c.reason.is_failure, (user, c.reason)
            assert not c.connected.is_set()
        finally:
            c.close()


def test_service_accounts_only_on_the_services_listener(broker: Broker) -> None:
    """ingest's and operator's passwords do not work where devices connect, and a
    device's password does not work on the services listener."""
    for user, pw in (("ingest", "ingest-pw"), ("operator", "operator-pw")):
        on_devices = broker.device(user, pw)
        on_services = Client(broker.svc.port, user, pw)
        try:
            assert on_devices.reason is not None and on_devices.reason.is_failure, user
            assert on_services.connected.is_set(), (user, on_services.reason)
        finally:
            on_devices.close()
            on_services.close()
    dev = Client(broker.svc.port, "ST01", "st01-pw")
    try:
        assert dev.reason is not None and dev.reason.is_failure, dev.reason
    finally:
        dev.close()


def test_devices_publish_only_on_their_own_topics(broker: Broker) -> None:
    ingest = Client(broker.svc.port, "ingest", "ingest-pw")
    st01 = broker.device("ST01", "st01-pw")
    try:
        assert ingest.connected.is_set() and st01.connected.is_set()
        assert not ingest.subscribe("yukimizu/#").is_failure
        assert not st01.publish("yukimizu/snow/ST01", b"own").is_failure
        denied = st01.publish("yukimizu/snow/ST02", b"forged")
        assert denied.is_failure and denied.value == 0x87, denied  # Not authorized
        assert st01.publish("other/topic", b"x").is_failure
        wait_for(lambda: ingest.messages, what="ingest receives the device's reading")
        time.sleep(0.5)
        assert ingest.messages == [("yukimizu/snow/ST01", b"own")]
        # ingest reads, it does not publish
        assert ingest.publish("yukimizu/snow/ST01", b"x").is_failure
    finally:
        ingest.close()
        st01.close()


def test_a_device_cannot_read_other_devices(broker: Broker) -> None:
    st02 = broker.device("ST02", "st02-pw")
    st01 = broker.device("ST01", "st01-pw")
    try:
        # Measured on mosquitto 2.0.11: a wildcard subscription is granted and the
        # ACL is applied to every message at delivery, so nothing arrives.
        st02.subscribe("yukimizu/#")
        st02.subscribe("yukimizu/snow/ST01")
        st01.publish("yukimizu/snow/ST01", b"private")
        time.sleep(0.5)
        assert st02.messages == []
    finally:
        st01.close()
        st02.close()


def test_ingest_reads_through_the_acl(
    broker: Broker, influx: InfluxDB1, tmp_path: Path, tag: str
) -> None:
    mqtt_over = {
        "topic_prefix": '"yukimizu"',
        "username": '"ingest"',
        "password": '"ingest-pw"',
        "lorawan_topics": "[]",
    }
    cfg = make_config(tmp_path, tag, broker.svc, influx.url, overrides={"mqtt": mqtt_over})
    with running_ingest(cfg):
        dev = broker.device("ST01", "st01-pw")
        try:
            assert not dev.publish("yukimizu/snow/ST01", reading()).is_failure
        finally:
            dev.close()
        wait_for(lambda: count(influx, tag, "snow_depth", "depth_cm") >= 1, what="row")


def test_tls_listener(broker: Broker, tmp_path: Path) -> None:
    ca = broker.certs / "ca.crt"
    base = load_config(SAMPLE_CONFIG, environ={}).mqtt

    def mqtt_cfg(**kw: Any) -> Any:
        upd = {"host": "localhost", "port": broker.tls_port, "username": "ST01", "tls_ca_file": ca}
        upd.update(kw)
        if "password" not in upd:
            from pydantic import SecretStr  # noqa: PLC0415

            upd["password"] = SecretStr("st01-pw")
        return base.model_copy(update=upd)

    with Publisher(mqtt_cfg()) as pub:  # the simulators' publisher
        pub.publish("yukimizu/snow/ST01", reading())
    other = make_certs("localhost", tmp_path / "other")
    t0 = time.monotonic()
    with pytest.raises(PublishError, match="certificate verify failed"):
        Publisher(mqtt_cfg(tls_ca_file=other / "ca.crt"))
    with pytest.raises(PublishError, match=r"certificate verify failed|match"):
        Publisher(mqtt_cfg(host="127.0.0.1"))  # the certificate names localhost only
    assert time.monotonic() - t0 < 10, "a TLS refusal must be quick, not a hang"


def test_ingest_over_tls_is_refused_on_the_device_listener(
    broker: Broker, influx: InfluxDB1, tmp_path: Path, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Pointed at 8883 by mistake, ingest says the broker refused it (not a hang)."""
    over = {
        "host": '"localhost"',
        "port": str(broker.tls_port),
        "topic_prefix": '"yukimizu"',
        "username": '"ingest"',
        "password": '"ingest-pw"',
        "tls_ca_file": f'"{broker.certs / "ca.crt"}"',
        "lorawan_topics": "[]",
    }
    cfg = make_config(tmp_path, tag, broker.svc, influx.url, overrides={"mqtt": over})
    with caplog.at_level("ERROR"):
        it = IngestThread(cfg)
        it.thread.start()
        try:
            wait_for(lambda: "refused the connection" in caplog.text, what="loud refusal")
        finally:
            it.stop()


def test_ingest_connects_over_tls(influx: InfluxDB1, tmp_path: Path, tag: str) -> None:
    """Ingest on another machine than the broker: a TLS listener for the service
    accounts (README "Securing the broker"), reachable only from ingest's host."""
    services = tmp_path / "services.passwd"
    services.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(services), "ingest", "ingest-pw"], check=True)
    certs = make_certs("localhost", tmp_path / "certs")
    tls = free_port()
    conf = (
        "per_listener_settings true\n"
        f"listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {services}\n"
        f"cafile {certs}/ca.crt\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
        "listener {port} 127.0.0.1\nallow_anonymous true\n"
    )
    svc = Mosquitto(tmp_path / "svc", conf=conf)
    svc.start()
    try:
        over = {
            "host": '"localhost"',
            "port": str(tls),
            "topic_prefix": '"yukimizu"',
            "username": '"ingest"',
            "password": '"ingest-pw"',
            "tls_ca_file": f'"{certs / "ca.crt"}"',
            "lorawan_topics": "[]",
        }
        cfg = make_config(tmp_path, tag, svc, influx.url, overrides={"mqtt": over})
        assert cfg.mqtt.port == tls
        with running_ingest(cfg):  # waits for the connection (fails the test otherwise)
            dev = Client(svc.port, None, None)
            try:
                assert not dev.publish("yukimizu/snow/ST01", reading()).is_failure
            finally:
                dev.close()
            wait_for(lambda: count(influx, tag, "snow_depth", "depth_cm") >= 1, what="row over TLS")
    finally:
        svc.stop()


# ----------------------------------------------------------------------------- devices


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG), **env},
    )


def _device_env(broker: Broker, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A copy of the sample registry and the broker's password files, for the CLI."""
    reg = tmp_path / "reg"
    reg.mkdir()
    for name in ("stations.csv", "meters.csv", "plows.csv"):
        (reg / name).write_text((REPO / "config" / name).read_text(encoding="utf-8"), "utf-8")
    env = {
        "YUKIMIZU_REGISTRY__STATIONS": f'"{reg / "stations.csv"}"',
        "YUKIMIZU_REGISTRY__METERS": f'"{reg / "meters.csv"}"',
        "YUKIMIZU_REGISTRY__PLOWS": f'"{reg / "plows.csv"}"',
        "YUKIMIZU_PROVISION__PASSWORD_FILE": f'"{broker.passwd}"',
        "YUKIMIZU_PROVISION__SERVICES_PASSWORD_FILE": f'"{broker.services_passwd}"',
        "YUKIMIZU_PROVISION__RELOAD_COMMAND": f'["kill", "-HUP", "{broker.svc.pid}"]',
    }
    return env, reg


def test_device_add_can_publish_at_once_and_remove_locks_it_out(
    broker: Broker, tmp_path: Path
) -> None:
    env, reg = _device_env(broker, tmp_path)
    bad = _cli(env, "device", "add", "snow", "ST90", "district=本町", "lat=99")
    assert bad.returncode == 1 and "ST90" not in (reg / "stations.csv").read_text()
    assert "ST90" not in broker.passwd.read_text()
    add = _cli(
        env,
        "device",
        "add",
        "snow",
        "ST90",
        "name=新設局",
        "district=本町",
        "lat=38.38",
        "lon=140.20",
        "mount_height_cm=300",
        "sensor_type=ultrasonic",
    )
    assert add.returncode == 0, add.stderr
    password = re.search(r"MQTT password: (\S+)", add.stdout)
    assert password, add.stdout
    assert "ST90,新設局,本町" in (reg / "stations.csv").read_text(encoding="utf-8")
    assert password.group(1) not in broker.passwd.read_text()  # hashed, not in clear

    def connects(pw: str) -> bool:
        c = broker.device("ST90", pw)
        try:
            ok = c.connected.is_set() and not c.publish("yukimizu/snow/ST90", b"x").is_failure
        finally:
            c.close()
        return ok

    wait_for(lambda: connects(password.group(1)), timeout_s=10, what="new device connects")
    rm = _cli(env, "device", "remove", "snow", "ST90")
    assert rm.returncode == 0, rm.stderr
    assert "ST90" not in (reg / "stations.csv").read_text(encoding="utf-8")
    wait_for(lambda: not connects(password.group(1)), timeout_s=10, what="removed device refused")


# ----------------------------------------------------------------------------- hostile devices


def _device_pub(broker: Broker, user: str, pw: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``mosquitto_pub`` as a device: TLS to the device listener (MQTT 3.1.1)."""
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "localhost",
            "-p",
            str(broker.tls_port),
            "--cafile",
            str(broker.certs / "ca.crt"),
            "-u",
            user,
            "-P",
            pw,
            "-q",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_device_cannot_take_over_ingests_client_id(
    broker: Broker, influx: InfluxDB1, tmp_path: Path, tag: str
) -> None:
    """Issue 15's probe: with one device's password and ingest's (public) client id,
    `mosquitto_sub -i <ingest's id> -c -q 1` closed ingest's connection and took its
    queued readings (41 of 80 acknowledged readings stored). On the device listener
    the client id is the username: ingest stays connected and stores all 80."""
    over = {
        "topic_prefix": '"yukimizu"',
        "username": '"ingest"',
        "password": '"ingest-pw"',
        "lorawan_topics": "[]",
    }
    cfg = make_config(tmp_path, tag, broker.svc, influx.url, overrides={"mqtt": over})
    start = datetime.now(UTC).timestamp() - 3600
    # distinct device times: InfluxDB keeps one point per series and time
    readings = [
        json.dumps(
            {"time": datetime.fromtimestamp(start + i, UTC).isoformat(), "depth_cm": 10.0 + i}
        ).encode()
        for i in range(80)
    ]
    before = count(influx, tag, "snow_depth", "depth_cm")
    with running_ingest(cfg) as it:
        dev = broker.device("ST01", "st01-pw")
        attacker: subprocess.Popen[str] | None = None
        out = ""
        try:
            acked = 0
            for i, payload in enumerate(readings):
                if i == 40:
                    attacker = subprocess.Popen(
                        [
                            "mosquitto_sub",
                            "-h",
                            "localhost",
                            "-p",
                            str(broker.tls_port),
                            "--cafile",
                            str(broker.certs / "ca.crt"),
                            "-u",
                            "ST02",
                            "-P",
                            "st02-pw",
                            "-i",
                            cfg.mqtt.client_id,
                            "-c",
                            "-q",
                            "1",
                            "-t",
                            "yukimizu/#",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    wait_for(
                        lambda: "u'ST02')" in broker.svc.log_path.read_text(),
                        what="the attacker connected",
                    )
                if not dev.publish("yukimizu/snow/ST01", payload).is_failure:
                    acked += 1
            assert acked == 80
            wait_for(
                lambda: count(influx, tag, "snow_depth", "depth_cm") - before >= 80,
                timeout_s=30,
                what="every acknowledged reading stored",
            )
            assert attacker is not None and attacker.poll() is None, "attacker still connected"
        finally:
            dev.close()
            if attacker is not None:
                attacker.terminate()
                out, _err = attacker.communicate(timeout=10)
        assert it.ingest.source.reconnects == 0, "ingest was disconnected"
        assert it.ingest.source.session_lost == 0
    assert count(influx, tag, "snow_depth", "depth_cm") - before == 80
    assert out == "", "the attacker received readings"
    log_text = broker.svc.log_path.read_text()
    assert re.search(r"New client connected .* as ST02 \(.*u'ST02'\)", log_text), "id = username"
    assert f"Client {cfg.mqtt.client_id} already connected" not in log_text


def test_the_broker_refuses_an_oversized_publish(broker: Broker, tmp_path: Path) -> None:
    """max_packet_size: a device sending more is disconnected before its packet is
    buffered, and nothing of it reaches ingest; a payload under the limit passes."""
    limit = int(
        re.search(
            r"^max_packet_size (\d+)$",
            (REPO / "deploy" / "mosquitto" / SHIPPED[broker.name]).read_text(),
            re.M,
        ).group(1)  # type: ignore[union-attr]
    )
    ingest = Client(broker.svc.port, "ingest", "ingest-pw")
    try:
        ingest.subscribe("yukimizu/snow/ST01")
        big = tmp_path / "big.bin"
        for size, refused in ((limit - 1024, False), (limit + 1, True), (20_000_000, True)):
            big.write_bytes(b"{" + b" " * (size - 1))
            out = _device_pub(broker, "ST01", "st01-pw", "-t", "yukimizu/snow/ST01", "-f", str(big))
            assert (out.returncode != 0) == refused, (size, out.stderr)
        wait_for(lambda: ingest.messages, what="the payload under the limit")
        _device_pub(broker, "ST01", "st01-pw", "-t", "yukimizu/snow/ST01", "-m", "end")
        wait_for(lambda: ingest.messages[-1][1] == b"end", what="the marker after the refusals")
        assert [len(p) for _t, p in ingest.messages] == [limit - 1024, 3]
        assert "disconnected due to oversize packet" in broker.svc.log_path.read_text()
    finally:
        ingest.close()


# ----------------------------------------------------------------------------- refused ids


def _accounts(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("device_id", "ja", "en"),
    [
        # issue 15: `device add plow ingest` replaced the service's password
        ("ingest", "サービスアカウントの名前なので使えません", "is a service account's name"),
        ("operator", "サービスアカウントの名前なので使えません", "is a service account's name"),
        ("Ingest", "サービスアカウントの名前なので使えません", "is a service account's name"),
        # the sample config's client id: a device of that name would own it
        ("yukimizu-ingest", "クライアントID", "is ingest's MQTT client id"),
        # only in the device password file (e.g. added by hand)
        ("ZZ01", "MQTT パスワードファイル", "already has an account in the MQTT password file"),
        # only in the service password file
        ("monitor", "MQTT パスワードファイル", "MQTT service password file"),
        # only in the ACL
        ("gw01", "ACL", "already a user in the ACL"),
        # already a registered device with an account
        ("ST01", "MQTT パスワードファイル", "already has an account"),
        # not the registry's id pattern
        ("a/b", "英数字で始まり", "is not valid"),
        ("plow#", "英数字で始まり", "is not valid"),
        ("-x", "英数字で始まり", "is not valid"),
        ("ST 9", "英数字で始まり", "is not valid"),
    ],
)
def test_device_add_refuses_ids_it_must_not_overwrite(
    broker: Broker, tmp_path: Path, device_id: str, ja: str, en: str
) -> None:
    env, reg = _device_env(broker, tmp_path)
    acl = tmp_path / "acl"
    acl.write_text((REPO / "deploy" / "mosquitto" / "acl").read_text() + "\nuser gw01\n")
    env["YUKIMIZU_PROVISION__ACL_FILE"] = f'"{acl}"'
    if device_id == "ZZ01":
        subprocess.run(["mosquitto_passwd", "-b", str(broker.passwd), "ZZ01", "zz"], check=True)
    if device_id == "monitor":
        subprocess.run(
            ["mosquitto_passwd", "-b", str(broker.services_passwd), "monitor", "mon"], check=True
        )
    try:
        before = (_accounts(broker.passwd), _accounts(broker.services_passwd), acl.read_text())
        registry = (reg / "plows.csv").read_text(encoding="utf-8")
        cols = ["name=テスト車", "contractor=朝日建設"]
        for lang, expected in (("ja", ja), ("en", en)):
            out = _cli(env, "device", "add", "--lang", lang, "plow", "--", device_id, *cols)
            assert out.returncode == 1, out.stdout
            assert repr(device_id) in out.stderr and expected in out.stderr, out.stderr
            assert "MQTT password" not in out.stdout
        after = (_accounts(broker.passwd), _accounts(broker.services_passwd), acl.read_text())
        assert after == before, "an account file changed"
        assert (reg / "plows.csv").read_text(encoding="utf-8") == registry
        if device_id in ("ingest", "operator"):  # the service still logs in
            c = Client(broker.svc.port, device_id, f"{device_id}-pw")
            try:
                assert c.connected.is_set(), c.reason
            finally:
                c.close()
    finally:
        for f, user in ((broker.passwd, "ZZ01"), (broker.services_passwd, "monitor")):
            if f"{user}:" in _accounts(f):
                subprocess.run(["mosquitto_passwd", "-D", str(f), user], check=True)


def test_provision_id_pattern_is_the_registrys() -> None:
    from provision.devices import ID_PATTERN  # noqa: PLC0415
    from sensors import registry  # noqa: PLC0415

    assert ID_PATTERN.pattern == registry._ID_RE.pattern  # noqa: SLF001


@pytest.mark.parametrize("name", ["docker", "town"])
def test_ingests_session_survives_its_restart_and_the_brokers(
    name: str, influx: InfluxDB1, tmp_path: Path, tag: str
) -> None:
    """With the listeners split, readings published while ingest is stopped, and
    across a broker restart, are queued for ingest's persistent session on the
    services listener and stored when it is back."""
    broker = start_broker(name, tmp_path / "broker")
    try:
        over = {
            "topic_prefix": '"yukimizu"',
            "username": '"ingest"',
            "password": '"ingest-pw"',
            "lorawan_topics": "[]",
        }
        cfg = make_config(tmp_path, tag, broker.svc, influx.url, overrides={"mqtt": over})
        start = datetime.now(UTC).timestamp() - 7200

        def publish(numbers: range) -> None:
            dev = broker.device("ST01", "st01-pw")
            try:
                for i in numbers:
                    payload = json.dumps(
                        {"time": datetime.fromtimestamp(start + i, UTC).isoformat(), "depth_cm": i}
                    ).encode()
                    assert not dev.publish("yukimizu/snow/ST01", payload).is_failure
            finally:
                dev.close()

        with running_ingest(cfg):  # creates the persistent session
            publish(range(10))
            wait_for(lambda: count(influx, tag, "snow_depth", "depth_cm") >= 10, what="10 rows")
        publish(range(10, 40))  # ingest stopped
        broker.svc.stop()
        broker.svc.start()
        publish(range(40, 60))
        with running_ingest(cfg) as it:
            wait_for(
                lambda: count(influx, tag, "snow_depth", "depth_cm") >= 60,
                timeout_s=30,
                what="every reading published while ingest was away",
            )
            assert it.ingest.source.session_lost == 0
        assert count(influx, tag, "snow_depth", "depth_cm") == 60
    finally:
        broker.svc.stop()
