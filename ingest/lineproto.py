"""Line protocol for readings: the shared encoder (core/lineproto.py) bound to the
readings' schema (sensors/schema.py), whose pinned types decide how a value is written.
"""

from __future__ import annotations

from core.lineproto import EncodeError, Encoder
from sensors.schema import FIELDS, TAGS

__all__ = ["EncodeError", "encode", "encode_fields", "series_key"]

_ENCODER = Encoder(TAGS, FIELDS)
series_key = _ENCODER.series_key
encode_fields = _ENCODER.encode_fields
encode = _ENCODER.encode
