"""core.signals: SIGTERM and SIGINT set the service's stop event, and say so in the log."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator

import pytest

from core.signals import STOP_SIGNALS, stop_on_signals


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("restore_handlers")
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_stop_signal_sets_the_event_and_is_logged(
    sig: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("yukimizu.test.signals")
    stop = stop_on_signals(log, "stopping after this cycle")
    assert not stop.is_set()
    with caplog.at_level(logging.INFO, logger=log.name):
        signal.raise_signal(sig)
    assert stop.is_set()
    assert f"received {sig.name}: stopping after this cycle" in caplog.messages


@pytest.mark.usefixtures("restore_handlers")
def test_other_signals_are_left_alone_and_a_given_event_is_used() -> None:
    mine = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    got = stop_on_signals(logging.getLogger(__name__), "x", [signal.SIGTERM], stop=mine)
    assert got is mine
    assert signal.getsignal(signal.SIGINT) is before
    signal.raise_signal(signal.SIGTERM)
    assert mine.is_set()
