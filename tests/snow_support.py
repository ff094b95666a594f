"""Shared by the snow tests: a dispatch call as the engine emits it."""

from __future__ import annotations

from datetime import UTC, datetime

from rules.transitions import Status, Transition


def dispatch_call(at_ms: int, since_ms: int | None = None) -> tuple[int, Transition]:
    """(detection time, transition) of a snow.dispatch call whose event time is
    ``at_ms``, detected then: what scorers read from a backtest; ``since_ms``: the
    start of the window it states."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return at_ms, Transition(
        key="snow.dispatch:town",
        rule="snow.dispatch",
        category="snow",
        subject="town",
        subject_kind="town",
        severity="critical",
        status=Status.FIRING,
        event_time=at,
        detected_at=at,
        message="除雪出動基準に達しました",
        values={} if since_ms is None else {"since_ms": since_ms},
    )
