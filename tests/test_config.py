"""A bad config stops start-up with a message naming the field; secrets stay secret."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from devtools.localstack import free_port
from tests.conftest import REPO, SAMPLE_CONFIG


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nport = 'abc'\n", "mqtt.port: Input should be a valid integer"),
        ("[mqtt]\nport = 70000\n", "mqtt.port: Input should be less than or equal to 65535"),
        ("[mqtt]\nprot = 1883\n", "mqtt.prot: unknown key (typo?)"),
        ("[influx]\napi = 'v3'\n", "influx.api: Input should be 'v1' or 'v2'"),
        ("[influx]\napi = 'v2'\norg = 'town'\n", "api = 'v2' requires bucket, token"),
        ("[influx]\nurl = 'localhost:8086'\n", "url must start with http:// or https://"),
        ("[ingest]\nbatch_size = 20000\n", "mqtt.receive_maximum (10000) must exceed"),
        ("[registry]\nlat_min = 39\nlat_max = 38\n", "bounding box is empty"),
        ("[mqtt\nport = 1\n", "is not valid TOML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(err.value)


def test_env_overrides_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(
        SAMPLE_CONFIG,
        environ={
            "YUKIMIZU_MQTT__PORT": "1999",
            "YUKIMIZU_INFLUX__PASSWORD": "hunter2",
            "YUKIMIZU_MQTT__CLIENT_ID": "plain string",
        },
    )
    assert cfg.mqtt.port == 1999 and cfg.mqtt.client_id == "plain string"
    assert cfg.registry.stations == REPO / "config" / "stations.csv"
    assert cfg.influx.password is not None
    assert cfg.influx.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())


def test_env_error_is_attributed_to_the_environment() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE_CONFIG, environ={"YUKIMIZU_MQTT__PORT": "x"})
    assert "YUKIMIZU_MQTT__" in str(err.value) and "mqtt.port" in str(err.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_ingest_refuses_to_start_on_bad_config(tmp_path: Path) -> None:
    out = _cli("-c", str(write(tmp_path, "[ingest]\nbatch_size = 'many'\n")), "ingest")
    assert out.returncode == 2
    assert "ingest.batch_size: Input should be a valid integer" in out.stderr
    missing = _cli("-c", str(tmp_path / "nope.toml"), "ingest")
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_ingest_refuses_to_start_on_bad_registry(tmp_path: Path) -> None:
    bad = tmp_path / "meters.csv"
    shutil.copy(REPO / "config" / "meters.csv", bad)
    with bad.open("a", encoding="utf-8") as fh:
        fh.write("M999,本町,38.38,140.2,13,abc,6,L,false,\n")
    out = _cli("config", "check", env={"YUKIMIZU_REGISTRY__METERS": str(bad)})
    assert out.returncode == 2
    assert "meters.csv line 32: column 'q3_m3h': 'abc' is not a number" in out.stderr
    ok = _cli("config", "check")
    assert ok.returncode == 0 and "10 stations, 30 meters, 5 plows" in ok.stdout


def test_password_never_logged(tmp_path: Path) -> None:
    out = _cli(
        "--log-level",
        "DEBUG",
        "config",
        "check",
        env={"YUKIMIZU_MQTT__PASSWORD": "s3cr3t-pw", "YUKIMIZU_INFLUX__TOKEN": "tok-123"},
    )
    assert "s3cr3t-pw" not in out.stdout + out.stderr
    assert "tok-123" not in out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_file_is_valid() -> None:
    env = {
        **os.environ,
        "INFLUX_TOKEN": "t",
        "INFLUX_PASSWORD": "p",
        "MQTT_INGEST_PASSWORD": "m",
        "GRAFANA_ADMIN_PASSWORD": "g",
    }
    out = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_services_cli_up_status_down(tmp_path: Path) -> None:
    env = {
        "YUKIMIZU_SERVICES__DATA_DIR": str(tmp_path / "svc"),
        "YUKIMIZU_SERVICES__MQTT_PORT": str(free_port()),
        "YUKIMIZU_SERVICES__INFLUX_PORT": str(free_port()),
    }
    try:
        up = _cli("services", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert "mqtt://127.0.0.1:" in up.stdout and "http://127.0.0.1:" in up.stdout
        status = _cli("services", "status", env=env)
        assert status.returncode == 0 and status.stdout.count("running") == 2
    finally:
        down = _cli("services", "down", env=env)
    assert down.returncode == 0
    status = _cli("services", "status", env=env)
    assert status.returncode == 1 and status.stdout.count("stopped") == 2


def test_services_up_on_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "YUKIMIZU_SERVICES__DATA_DIR": str(tmp_path / "svc"),
            "YUKIMIZU_SERVICES__MQTT_PORT": str(port),
        }
        try:
            out = _cli("services", "up", env=env)
        finally:
            _cli("services", "down", env=env)
    assert out.returncode == 1
    assert f"port 127.0.0.1:{port} is already in use" in out.stderr
    assert "Traceback" not in out.stderr
