"""Whatever arrives, the processor answers with lines or a dead-letter reason, never a
crash and never an internal error (hypothesis generates the payloads)."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import load_config, load_registry
from core.message import Message
from ingest.pipeline import Processor
from ingest.service import limits_from
from tests.conftest import SAMPLE_CONFIG

_cfg = load_config(SAMPLE_CONFIG, environ={})
PROC = Processor(load_registry(_cfg), limits_from(_cfg))
NOW = time.time()
TOPICS = st.sampled_from(
    [
        "yukimizu/snow/ST02",
        "yukimizu/water/M002",
        "yukimizu/plow/P01",
        "yukimizu/snow/ZZ",
        "yukimizu/water",
        "application/1/device/70b3d5e4a32ac06f/event/up",
        "v3/a@ttn/devices/plow-1/up",
        "elsewhere/x",
    ]
)
KEYS = st.sampled_from(
    [
        "time",
        "ts",
        "depth_cm",
        "distance_mm",
        "air_temp_c",
        "register_l",
        "register_m3",
        "register",
        "lat",
        "lon",
        "speed_kmh",
        "seq",
        "battery_v",
        "alarms",
        "readings",
        "device",
        "bn",
        "bt",
        "n",
        "u",
        "v",
        "s",
        "vb",
        "object",
        "deviceInfo",
        "fCnt",
        "uplink_message",
        "end_device_ids",
        "decoded_payload",
        "devEui",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(KEYS | st.text(max_size=5), kids, max_size=6)
    ),
    max_leaves=25,
)


def _check(topic: str, payload: bytes) -> None:
    result = PROC.process(Message(topic, payload, NOW))
    assert result.reason != "internal_error", (topic, payload, result.detail)
    assert result.lines or result.reason or result.drops, (topic, payload)


@settings(max_examples=1500, deadline=None)
@given(TOPICS, JSON)
def test_structured_garbage(topic: str, doc: object) -> None:
    _check(topic, json.dumps(doc, allow_nan=True).encode())


@settings(max_examples=500, deadline=None)
@given(TOPICS, st.binary(max_size=200))
def test_binary_garbage(topic: str, payload: bytes) -> None:
    _check(topic, payload)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="$GPRMCNAVSWE0123456789.,*\r\n", max_size=120))
def test_nmea_garbage(text: str) -> None:
    _check("yukimizu/plow/P01", text.encode())
