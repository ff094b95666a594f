"""Generated payloads through a real broker into a running ingest (a subprocess, as
deployed), with good readings between them: ingest stays up, every good reading is
stored, and its dead letters per reason are exactly what the same payloads get from
one in-process Processor. ``benchmarks/fuzz.py`` runs the same with 10⁵ payloads."""

from __future__ import annotations

import time
from pathlib import Path

from core.config import load_config, load_registry
from core.publish import Publisher
from devtools.fuzzing import GoodReadings, World, broker_run, collect, payloads, run_in_process
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.reasons import Reason
from ingest.service import limits_from
from tests.conftest import SAMPLE_CONFIG, config_env, ingest_subprocess

N = 2000
GOOD_DEVICE = "ST05"


def test_fuzzed_payloads_through_the_broker(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    env = config_env(tmp_path, tag, mosquitto, influx.url)
    cfg = load_config(SAMPLE_CONFIG, environ=env)
    registry, limits = load_registry(cfg), limits_from(cfg)
    world = World(registry, limits, time.time(), f"{tag}-lora/", frozenset({GOOD_DEVICE}))
    cases = collect(payloads(world), N, seed=1)
    predicted = run_in_process(cases, registry, limits, shared=True)
    assert "crash" not in predicted.outcomes
    influx.create_database(tag)
    ingest = ingest_subprocess(env, tmp_path / "ingest.log")
    try:
        run = broker_run(
            cases,
            publisher=lambda: Publisher(cfg.mqtt),
            ingest=ingest,
            influx=influx,
            database=tag,
            goods=GoodReadings(f"{tag}/snow/{GOOD_DEVICE}", GOOD_DEVICE),
            deadletter_path=tmp_path / "state" / "deadletter.sqlite",
            timeout_s=120,
        )
    finally:
        if ingest.proc is not None and ingest.proc.poll() is None:
            ingest.stop(60)
    assert run.alive, run.log_tail
    assert run.received == run.published == N + run.good
    assert run.good_stored == run.good == N // 10
    assert str(Reason.INTERNAL_ERROR) not in run.deadletters
    assert str(Reason.INFLUX_REJECTED) not in run.deadletters
    dead = {k: v for k, v in predicted.outcomes.items() if k not in {"stored", "dropped"}}
    assert run.deadletters == dead
    # the run exercised what it is meant to: many reasons, stored payloads, and the cases
    # that crashed ingest's processor or InfluxDB before (SenML units, int64 seq)
    assert len(dead) >= 10 and predicted.outcomes["stored"] > N // 10
    labels = {c.label for c in cases}
    assert {"senml/unit_object", "native/out_of_range", "senml/overflow"} <= labels
