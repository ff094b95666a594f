"""The one InfluxDB line-protocol encoder, for any schema of pinned field types.

Every field type comes from the schema (``sensors.schema`` for readings,
``rules.schema`` for derived series), never from the Python value, so a ``12`` and a
``12.0`` from two producers are written the same way. Encoding is split into the
series key (measurement + sorted tags, the same for every point of a device, so
callers cache it) and the fields + timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

_MEAS_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n"})


class EncodeError(ValueError):
    """A point that cannot be encoded (unknown field, wrong value)."""


def _float(value: object) -> str | None:
    if type(value) is float:
        f = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        f = float(value)
    else:
        raise EncodeError(f"expected a number, got {value!r}")
    if math.isfinite(f):
        return repr(f)
    return None  # InfluxDB cannot store NaN/inf: omit the field


def _int(value: object) -> str:
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return f"{value}i"
    raise EncodeError(f"expected an integer, got {value!r}")


def _bool(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise EncodeError(f"expected a boolean, got {value!r}")


def _str(value: object) -> str:
    s = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


_FORMAT: dict[str, Callable[[object], str | None]] = {
    "float": _float,
    "int": _int,
    "bool": _bool,
    "str": _str,
}


class Encoder:
    """Line protocol for the measurements of one schema (tags and pinned field types)."""

    def __init__(
        self, tags: Mapping[str, tuple[str, ...]], fields: Mapping[str, Mapping[str, str]]
    ) -> None:
        self._tags = dict(tags)
        self._formatters: dict[str, dict[str, Callable[[object], str | None]]] = {
            m: {name: _FORMAT[t] for name, t in f.items()} for m, f in fields.items()
        }
        # per measurement, its float fields: the common case, formatted inline
        self._floats: dict[str, frozenset[str]] = {
            m: frozenset(n for n, t in f.items() if t == "float") for m, f in fields.items()
        }

    def series_key(self, measurement: str, tags: Mapping[str, str | None]) -> str:
        """Measurement and tags, escaped, tags sorted. None or empty tag values are omitted."""
        allowed = self._tags.get(measurement)
        if allowed is None:
            raise EncodeError(f"unknown measurement {measurement!r}")
        parts = [measurement.translate(_MEAS_ESCAPE)]
        for key in sorted(tags):
            value = tags[key]
            if value is None or value == "":
                continue
            if key not in allowed:
                raise EncodeError(f"unknown tag {key!r} for {measurement}")
            parts.append(f",{key}={value.translate(_TAG_ESCAPE)}")
        return "".join(parts)

    def encode_fields(
        self, measurement: str, key: str, fields: Mapping[str, object], time_ms: int
    ) -> str:
        """Encode a point given its cached series key (millisecond timestamp)."""
        formatters = self._formatters[measurement]
        floats = self._floats[measurement]
        encoded: list[str] = []
        for name, value in fields.items():
            if type(value) is float and name in floats:
                # the fast path of _float: a finite float is its repr, NaN/inf omitted
                if value - value == 0.0:
                    encoded.append(f"{name}={value!r}")
                continue
            if value is None:
                continue
            fmt = formatters.get(name)
            if fmt is None:
                raise EncodeError(f"unknown field {name!r} for {measurement}")
            try:
                text = fmt(value)
            except EncodeError as exc:
                raise EncodeError(f"field {name!r}: {exc}") from None
            if text is not None:
                encoded.append(f"{name}={text}")
        if not encoded:
            raise EncodeError(f"point for {measurement} has no fields")
        return f"{key} {','.join(encoded)} {time_ms}"

    def encode(
        self,
        measurement: str,
        tags: Mapping[str, str | None],
        fields: Mapping[str, object],
        time_ms: int,
    ) -> str:
        """Encode one point (millisecond precision). None fields are omitted."""
        return self.encode_fields(measurement, self.series_key(measurement, tags), fields, time_ms)
