"""Why a message became a dead letter, or why part of one was dropped: one enumeration.

The values are the strings stored in the dead-letter store, written as the ``reason``
tag of ``yukimizu_deadletter`` and accepted by ``yukimizu deadletter … --reason``.
The README's table of reasons is checked against this enumeration by a test.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A dead-letter reason: the whole message (or the point named) was not written."""

    INVALID_JSON = "invalid_json"
    UNDECODABLE = "undecodable"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    VALIDATION = "validation"
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_KIND = "wrong_kind"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    OUT_OF_AREA = "out_of_area"
    NMEA = "nmea"
    NO_DECODED_PAYLOAD = "no_decoded_payload"
    INFLUX_REJECTED = "influx_rejected"
    INTERNAL_ERROR = "internal_error"


class Drop(StrEnum):
    """A part of a good message deliberately not written (counted, not dead-lettered)."""

    INVALID_FIX = "invalid_fix"
    NMEA_OTHER_SENTENCE = "nmea_other_sentence"
    LORAWAN_RETRANSMISSION = "lorawan_retransmission"
