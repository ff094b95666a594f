"""The README's payload examples are real: each one goes through the processor."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from core.config import load_config, load_registry
from core.message import Message
from ingest.pipeline import Limits, Processor
from ingest.service import limits_from
from tests.conftest import REPO, SAMPLE_CONFIG

# The README's examples, in order, and the topic each is sent on.
TOPICS = [
    "yukimizu/snow/ST02",
    "yukimizu/water/M003",
    "yukimizu/water/M002",
    "application/1/device/70b3d5e4a32ac06f/event/up",
    "v3/yukimizu@ttn/devices/plow-1/up",
]


def test_readme_payload_examples_decode() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    assert len(blocks) == len(TOPICS)
    nmea = re.findall(r"```\n(\$GPRMC[^\n]*)\n```", text)
    assert len(nmea) == 1
    cfg = load_config(SAMPLE_CONFIG, environ={})
    limits: Limits = limits_from(cfg)
    proc = Processor(load_registry(cfg), limits)
    received = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    for topic, payload in [*zip(TOPICS, blocks, strict=True), ("yukimizu/plow/P02", nmea[0])]:
        result = proc.process(Message(topic, payload.encode(), received))
        assert result.reason is None, (topic, result.detail)
        assert result.lines, topic
