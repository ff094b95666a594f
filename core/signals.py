"""Stop signals for the long-running services (ingest, rules, alerts, public).

SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C) both ask for a clean stop: the
handler only logs and sets a :class:`threading.Event`; the service's loop sees it at
its next turn and finishes what it was doing (flush, ack, commit) before returning.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from types import FrameType

__all__ = ["STOP_SIGNALS", "stop_on_signals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(
    log: logging.Logger,
    stopping: str,
    signals: Iterable[signal.Signals] = STOP_SIGNALS,
    stop: threading.Event | None = None,
) -> threading.Event:
    """Install handlers that log ``received SIGTERM: <stopping>`` and set the event.

    Returns the event (``stop`` if given, else a new one). Call it from the main
    thread, as Python requires for signal handlers.
    """
    event = stop if stop is not None else threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, stopping)
        event.set()

    for sig in signals:
        signal.signal(sig, on_signal)
    return event
