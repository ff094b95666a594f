"""The transport-neutral message: what the MQTT adapter hands to its consumers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """A message as ingest sees it; the MQTT adapter converts paho's into this."""

    topic: str
    payload: bytes
    received_at: float  # Unix seconds, ingest's clock
    token: Any = None  # opaque ack handle from the transport
