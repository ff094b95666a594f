"""The NMEA 0183 sentence checksum, shared by ingest's decoder, the plow simulator and
the demo, so what they write and what ingest verifies cannot drift apart."""

from __future__ import annotations


def checksum(body: str) -> int:
    """The XOR of every character between ``$`` and ``*`` (the two hex digits after ``*``)."""
    value = 0
    for ch in body:
        value ^= ord(ch)
    return value


def sentence(body: str) -> str:
    """``$body*CS``: a sentence with its checksum, without the line ending."""
    return f"${body}*{checksum(body):02X}"
