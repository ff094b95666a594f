"""Ready means subscribed; paho is used in two modules only, its internals behind a fence."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from core.mqtt import MqttSource, ready_marker
from devtools.localstack import InfluxDB1, Mosquitto
from devtools.processes import IngestNotReady, IngestProcess
from tests.conftest import (
    REPO,
    SAMPLE_CONFIG,
    IngestThread,
    config_env,
    make_config,
    serve,
    wait_for,
)
from tests.test_layers import LAYERS

PAHO_USERS = {"core/mqtt.py", "core/publish.py"}  # docs/architecture.md#layers


DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


@pytest.fixture
def acl_broker(tmp_path: Path, tag: str) -> Iterator[Mosquitto]:
    """Anonymous clients may subscribe to ``<tag>/#`` and nothing else.

    Mosquitto's ``acl_file`` grants every subscription and filters on delivery; its
    dynamic-security plugin (part of the Debian package) refuses one with 0x87.
    """
    assert DYNSEC_PLUGIN.is_file(), f"{DYNSEC_PLUGIN} missing: run `bash scripts/setup.sh`"
    dynsec = tmp_path / "dynamic-security.json"
    dynsec.write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": True,
                    "publishClientReceive": True,
                    "subscribe": False,
                    "unsubscribe": True,
                },
                "clients": [],
                "groups": [{"groupname": "anonymous", "roles": [{"rolename": "reader"}]}],
                "roles": [
                    {
                        "rolename": "reader",
                        "acls": [
                            {"acltype": "subscribePattern", "topic": f"{tag}/#", "allow": True}
                        ],
                    }
                ],
                "anonymousGroup": "anonymous",
            }
        )
    )
    conf = f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {dynsec}\n"
    yield from serve(Mosquitto(tmp_path / "acl-broker", extra_conf=conf))


def test_refused_subscription_is_loud_and_never_ready(
    tmp_path: Path,
    tag: str,
    acl_broker: Mosquitto,
    influx: InfluxDB1,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = make_config(tmp_path, tag, acl_broker, influx.url)
    with caplog.at_level("INFO", logger="core.mqtt"):
        it = IngestThread(cfg)
        it.thread.start()
        try:
            source = it.ingest.source
            assert isinstance(source, MqttSource)
            wait_for(lambda: source.subscribe_error, what="the refusal")
            assert source.connected.is_set()  # CONNACK alone is not ready
            assert not source.ready.is_set()
        finally:
            it.stop()
    lora = f"{tag}-lora/application/+/device/+/event/up"
    assert lora in str(source.subscribe_error)
    refusals = [r for r in caplog.records if "REFUSED the subscription" in r.getMessage()]
    assert refusals and all(r.levelname == "ERROR" for r in refusals)
    assert any(lora in r.getMessage() and "ACL" in r.getMessage() for r in refusals)
    assert ready_marker() not in caplog.text


def test_ingest_process_reports_ready_only_after_the_suback(
    tmp_path: Path, tag: str, acl_broker: Mosquitto, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    log = tmp_path / "ingest.log"
    env = {
        **config_env(tmp_path, tag, acl_broker, influx.url),
        "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG),
    }
    with pytest.raises(IngestNotReady, match="not ready"):
        IngestProcess(env, log).start(timeout_s=5)
    assert "REFUSED the subscription" in log.read_text()
    env = {
        **config_env(tmp_path, tag, mosquitto, influx.url),
        "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG),
    }
    ingest = IngestProcess(env, log).start()
    try:
        assert ready_marker(ingest.pid) in ingest.log()
    finally:
        assert ingest.stop() == 0


def _python_files(pkg: str) -> Iterator[Path]:
    root = REPO / pkg
    if root.is_dir():
        yield from root.rglob("*.py")


def test_only_core_mqtt_and_publish_import_paho() -> None:
    users: set[str] = set()
    for pkg in LAYERS:
        for path in _python_files(pkg):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "paho" or n.startswith("paho.") for n in names):
                    users.add(path.relative_to(REPO).as_posix())
    assert users == PAHO_USERS


def test_every_reach_into_paho_internals_is_marked() -> None:
    """``grep paho-private core/mqtt.py`` must list every use of paho's private API."""
    path = REPO / "core" / "mqtt.py"
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    paho_private = {n for n in dir(mqtt.Client) if n.startswith("_") and not n.startswith("__")}
    reaches: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "_packet" for a in node.names):
            reaches.append(node.lineno - 1)  # the marker sits on the line above the import
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "paho_packet":
                reaches.append(node.lineno)
        elif isinstance(node, ast.ClassDef) and any(
            ast.unparse(b) in ("mqtt.Client", "Client") for b in node.bases
        ):
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Attribute) and sub.attr in paho_private) or (
                    isinstance(sub, ast.FunctionDef) and sub.name in paho_private
                ):
                    reaches.append(sub.lineno)
    assert len(reaches) >= 8, "the scan found too little to be checking anything"
    unmarked = [
        f"{n}: {lines[n - 1].strip()}" for n in reaches if "paho-private" not in lines[n - 1]
    ]
    assert not unmarked, "reaches into paho internals without a paho-private comment"
