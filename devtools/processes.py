"""``python -m cli ingest`` as a separate process, started and stopped the one way.

The demo (devtools/demo.py), the tests (tests/conftest.py) and the benchmarks
(benchmarks/common.py) all run ingest as deployed, in its own process. They share
:class:`IngestProcess`: start it, wait until it is *ready* (its MQTT source logged
:func:`core.mqtt.ready_marker` with the child's pid, which it does only once the
broker's SUBACK granted every subscription: a reading published after that cannot be
missed), and stop it with SIGTERM (the real shutdown path) or SIGKILL (crash tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from core.mqtt import ready_marker

REPO = Path(__file__).resolve().parent.parent


class IngestNotReady(RuntimeError):
    """ingest exited, or did not subscribe in time; the message ends with its log."""


class IngestProcess:
    """One ``python -m cli [-c CONFIG] --log-level LEVEL ingest`` child process.

    ``env``: variables added to this process's environment (``YUKIMIZU_CONFIG``,
    ``YUKIMIZU_<SECTION>__<KEY>`` overrides). Output goes to ``log_path``, appended,
    so a restarted ingest keeps one log. ``log_level`` must let INFO through: the
    readiness line is an INFO line. ``detach``: a new session, so the child outlives
    the caller's terminal (the demo leaves ingest running). ``cwd``: where relative
    paths (a relative ``config_path``, the default ``config/yukimizu.toml``) resolve.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        config_path: Path | None = None,
        log_level: str = "INFO",
        detach: bool = False,
        cwd: Path = REPO,
        python: str = sys.executable,
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.config_path = config_path
        self.log_level = log_level
        self.detach = detach
        self.cwd = cwd
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        config = ["-c", str(self.config_path)] if self.config_path is not None else []
        return [self.python, "-m", "cli", *config, "--log-level", self.log_level, "ingest"]

    @property
    def pid(self) -> int:
        return self.running().pid

    def running(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("ingest was not started")
        return self.proc

    def start(self, timeout_s: float = 30.0) -> IngestProcess:
        """Start ingest and return once it is ready; :class:`IngestNotReady` otherwise.

        On failure the child is killed, so no half-started ingest is left behind.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"ingest is already running (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=self.detach,
            )
        marker = ready_marker(self.proc.pid)
        deadline = time.monotonic() + timeout_s
        while marker not in self.log():
            if self.proc.poll() is not None:
                raise IngestNotReady(
                    f"ingest exited with status {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise IngestNotReady(
                    f"ingest was not ready (subscribed) within {timeout_s:g} s; "
                    f"log {self.log_path}:\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, signum: int) -> None:
        self.running().send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (ingest flushes, acks, disconnects) and wait; SIGKILL after ``timeout_s``.

        Returns the exit status (negative: killed by that signal).
        """
        proc = self.running()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def kill(self) -> int:
        """SIGKILL, as a crash would: no flush, no acks, no DISCONNECT."""
        proc = self.running()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        return proc.returncode
