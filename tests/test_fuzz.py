"""Generated payloads through the whole :class:`Processor`: never a crash or an internal
error, never a line InfluxDB would refuse, and every payload either stored or
dead-lettered with the reason that names what is wrong with it.

The cases (devtools/fuzzing.py) are the real formats with one defect put in on purpose,
plus garbage. ``benchmarks/fuzz.py`` runs 10⁵ of them; CI runs a bounded number here.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings

from core.config import load_config, load_registry
from core.message import Message
from devtools.fuzzing import STORED, Case, World, cases, check, garbage, outcome
from ingest.pipeline import Processor
from ingest.reasons import Reason
from ingest.service import limits_from
from tests.conftest import SAMPLE_CONFIG

_cfg = load_config(SAMPLE_CONFIG, environ={})
REGISTRY = load_registry(_cfg)
LIMITS = limits_from(_cfg)
NOW = time.time()
WORLD = World(REGISTRY, LIMITS, NOW)
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _run(case: Case) -> None:
    # A fresh processor: the LoRaWAN frame-counter memory must not turn a good uplink
    # into a retransmission of an earlier example.
    result = Processor(REGISTRY, LIMITS).process(Message(case.topic, case.payload, NOW))
    problem = check(case, result)
    assert problem is None, f"{case.label} on {case.topic}: {problem}\n{case.payload[:400]!r}"


@settings(max_examples=3000, deadline=None, suppress_health_check=_SLOW)
@given(cases(WORLD))
def test_structured_payloads(case: Case) -> None:
    _run(case)


@settings(max_examples=1000, deadline=None, suppress_health_check=_SLOW)
@given(garbage(WORLD))
def test_garbage(case: Case) -> None:
    _run(case)


@settings(max_examples=300, deadline=None, suppress_health_check=_SLOW)
@given(cases(WORLD, defective=0.0))
def test_good_payloads_are_stored(case: Case) -> None:
    assert case.expect == {STORED}
    _run(case)


def _process(topic: str, payload: bytes) -> tuple[str, str]:
    result = Processor(REGISTRY, LIMITS).process(Message(topic, payload, NOW))
    return outcome(result), result.detail


T = int(NOW) - 60


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        # found by fuzzing: an object or a list as a SenML unit was an unhashable dict key
        (b'[{"bn":"urn:dev:yukimizu:ST02:","bt":%d,"n":"depth","v":12,"u":{"a":1}}]' % T, "u"),
        (b'[{"bn":"urn:dev:yukimizu:ST02:","bt":%d,"bu":["cm"],"n":"depth","v":12}]' % T, "bu"),
        # found by fuzzing: a base time as a string was converted, NaN included
        (b'[{"bn":"urn:dev:yukimizu:ST02:","bt":"NaN","n":"depth","v":12}]', "bt"),
        # v + bv overflows to inf; round(inf) raised for an integer quantity
        (
            b'[{"bn":"urn:dev:yukimizu:ST02:","bt":%d,"bv":1e308,"n":"seq","v":1.7e308},'
            b'{"n":"depth","v":1}]' % T,
            "seq",
        ),
    ],
)
def test_senml_defects_found_by_fuzzing(payload: bytes, names: str) -> None:
    reason, detail = _process("yukimizu/snow/ST02", payload)
    assert reason == Reason.VALIDATION
    assert names in detail


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        # InfluxDB refused the whole line: int64 overflow
        (b'{"time":%d,"depth_cm":5,"seq":9223372036854775808}' % T, "seq"),
        (b'{"time":%d,"depth_cm":5,"seq":18446744073709551615}' % T, "seq"),
        (b'{"time":%d,"depth_cm":5,"quality":-9223372036854775809}' % T, "quality"),
        # finite in JSON, inf after m3 → L
        (b'{"time":%d,"register_m3":1.7e308}' % T, "register_l"),
        # found by fuzzing: a boolean is an int to Python, and true became 1000 L
        (b'{"time":%d,"register_m3":true}' % T, "register_m3"),
    ],
)
def test_values_influxdb_cannot_store_are_refused(doc: bytes, field: str) -> None:
    topic = "yukimizu/water/M002" if b"register" in doc else "yukimizu/snow/ST02"
    reason, detail = _process(topic, doc)
    assert reason == Reason.VALIDATION
    assert detail.startswith(field)


def test_a_bad_register_m3_in_a_batch_refuses_only_its_reading() -> None:
    # found by fuzzing: refusing register_m3 = false in the decoder lost the whole batch
    result = Processor(REGISTRY, LIMITS).process(
        Message(
            "yukimizu/water/M002",
            b'{"readings":[{"time":%d,"register_m3":false},{"time":%d,"register_m3":1.5}]}'
            % (T - 60, T),
            NOW,
        )
    )
    assert result.reason == Reason.VALIDATION
    assert (
        result.detail
        == "reading 0: register_m3: expected a number (got False) (1 of 2 readings written)"
    )
    assert len(result.lines) == 1 and "register_l=1500.0" in result.lines[0]


def test_seq_at_int64_max_is_stored() -> None:
    reason, _ = _process(
        "yukimizu/snow/ST02", b'{"time":%d,"depth_cm":5,"seq":9223372036854775807}' % T
    )
    assert reason == STORED


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        # RMC time with an infinite seconds field: int(inf) raised OverflowError
        ("yukimizu/plow/P02", b"$GPRMC,0000inf,A,3822.8,N,14012.0,E,0.0,0.0,010126,,,A", "nmea"),
        # float() took "1_0" as 10 knots, and a hemisphere other than N/S as north
        ("yukimizu/plow/P02", b"$GPRMC,120000,A,3822.8,N,14012.0,E,1_0,0.0,010126,,,A", "nmea"),
        ("yukimizu/plow/P02", b"$GPRMC,120000,A,3822.8,X,14012.0,E,1.0,0.0,010126,,,A", "nmea"),
        # 59.9999999 s rounded to microsecond 1,000,000 and the fix was refused
        (
            "yukimizu/plow/P02",
            b"$GPRMC,235959.9999999,A,3822.8,N,14012.0,E,1,1,010126,,,A",
            "stored",
        ),
        # found by fuzzing: a codec's volume_m3 = true was stored as 1000 L
        (
            "application/1/device/70b3d5b4a619f46c/event/up",
            b'{"object":{"volume_m3":true},"fCnt":3,"time":"2026-01-01T00:00:00Z"}',
            "validation",
        ),
        # a non-ASCII digit passed str.isdigit() and int() refused it
        (
            "application/1/device/70b3d5e4a32ac06f/event/up",
            '{"fCnt":"²","object":{"register_l":5.0},"time":"2026-01-01T00:00:00Z"}'.encode(),
            "stored",
        ),
    ],
)
def test_other_decoder_defects_found_by_fuzzing(topic: str, payload: bytes, expected: str) -> None:
    reason, detail = _process(topic, payload)
    assert reason == expected, detail
