"""Private local instances of the real services: Mosquitto, InfluxDB 1.x, VictoriaMetrics.

Used by the CLI (``yukimizu services up|down|status``), the pytest fixtures and the
benchmarks.  Every instance gets its own data directory, its own config file and loopback
ports, and can be stopped, killed (``SIGKILL``, to simulate a crash) and started again on the
same port with the same data.

Pure standard library; no third-party imports.

Facts this module relies on (Debian 12 packages):

* mosquitto 2.0.11 drops privileges to user ``mosquitto`` when started as root, after which
  it cannot open its log file or save its persistence file in a root-owned data dir (it keeps
  running, silently without persistence).  As root we therefore write ``user root``.
* mosquitto saves its persistence file on a clean shutdown (SIGTERM) and every
  ``autosave_interval`` seconds (default 1800).  A ``SIGKILL`` loses whatever changed since the
  last save, e.g. QoS 1 messages queued for an offline persistent session.
* influxd 1.6.7 opens a second TCP port (RPC ``bind-address``, default ``:8088``); it is moved
  to a free loopback port so that several instances can run side by side.  ``INFLUXDB_*``
  environment variables override the config file, so they are removed from the child's
  environment.
* VictoriaMetrics makes a written sample visible to ``/api/v1/export`` only after about a
  second (insert buffers), even after ``/internal/force_flush``; :meth:`VictoriaMetrics.export`
  can poll for that.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SERVICES_FILE = "services.json"
LOG_TAIL_LINES = 25
_POLL_S = 0.05


class ServiceStartError(RuntimeError):
    """A local service could not be started (port taken, binary missing, it crashed)."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, from byte offset on (the current run only)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    text = data.decode(errors="replace").rstrip("\n")
    if not text:
        return "<log is empty>"
    return "\n".join(text.splitlines()[-lines:])


def _http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) for any status, raises only on I/O errors."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            return int(e.code), bytes(e.read())


def _http_status(url: str, timeout_s: float = 1.0) -> int | None:
    try:
        return _http("GET", url, timeout_s=timeout_s)[0]
    except OSError:
        return None


def _find_binary(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


# --------------------------------------------------------------------------- base class

_LIVE: dict[int, Service] = {}


def _stop_leftovers() -> None:
    """At interpreter exit, stop non-detached children that nobody stopped."""
    for svc in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            svc.stop(timeout_s=5)


atexit.register(_stop_leftovers)


@dataclass(eq=False)
class Service:
    """A private instance of one server binary.

    ``port=0`` picks a free port at the first :meth:`start`; later starts reuse it.
    ``detached=True`` puts the child in its own session so that it survives this process
    (used by :func:`up`); otherwise it is stopped when the interpreter exits.
    """

    data_dir: Path
    port: int = 0
    binary: str | None = None
    detached: bool = False

    name: ClassVar[str] = "service"
    binary_name: ClassVar[str] = ""
    apt_package: ClassVar[str] = ""
    scheme: ClassVar[str] = "http"

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    # ----------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    # ----------------------------------------------------------------- subclass hooks
    def _prepare(self) -> list[str]:
        """Write config files; return argv (without the binary)."""
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    # ----------------------------------------------------------------- lifecycle
    def resolve_binary(self) -> str:
        exe = self.binary or _find_binary(self.binary_name)
        if exe is None:
            raise ServiceStartError(
                f"{self.binary_name} not found; install it: apt-get install {self.apt_package}"
            )
        return exe

    def start(self, timeout_s: float = 15) -> None:
        """Start the server and wait until it serves; no-op if it is already running."""
        if self.running:
            log.debug("%s already running (pid %s)", self.name, self.pid)
            return
        exe = self.resolve_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        if port_open(self.host, self.port):
            raise ServiceStartError(f"{self.name}: port {self.host}:{self.port} is already in use")
        argv = [exe, *self._prepare()]
        with self.log_path.open("ab") as logf:
            offset = logf.tell()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            logf.write(f"===== {stamp} yukimizu start: {' '.join(argv)}\n".encode())
            logf.flush()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._env(),
                start_new_session=self.detached,
                close_fds=True,
            )
        self._proc, self._pid = proc, None
        deadline = t0 + timeout_s
        while True:
            rc = proc.poll()
            if rc is not None:
                self._forget()
                raise ServiceStartError(
                    f"{self.name} exited with code {rc} during start (port {self.port}); "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path, offset)}"
                )
            if self._ready():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceStartError(
                    f"{self.name} not ready on port {self.port} after {timeout_s:g}s (killed); "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path, offset)}"
                )
            time.sleep(_POLL_S)
        if not self.detached:
            _LIVE[id(self)] = self
        log.info(
            "%s ready at %s (pid %d) in %.2fs",
            self.name,
            self.url,
            proc.pid,
            time.monotonic() - t0,
        )

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM, wait up to timeout_s, then SIGKILL. No-op if not running."""
        pid = self.pid
        if pid is None or not self.running:
            self._forget()
            return
        log.info("stopping %s (pid %d)", self.name, pid)
        self._signal(signal.SIGTERM)
        if not self._wait(timeout_s):
            log.warning("%s (pid %d) ignored SIGTERM for %gs; killing", self.name, pid, timeout_s)
            self._signal(signal.SIGKILL)
            self._wait(10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL (simulates a crash) and reap."""
        if self.pid is not None and self.running:
            log.info("killing %s (pid %d)", self.name, self.pid)
            self._signal(signal.SIGKILL)
            self._wait(10)
        self._forget()

    def restart(self, timeout_s: float = 15) -> None:
        self.stop()
        self.start(timeout_s)

    def adopt(self, pid: int) -> bool:
        """Take over a running instance started elsewhere (e.g. by ``yukimizu services up``).

        Only if pid is this binary serving this data dir (guards against pid reuse).
        """
        cmd = _pid_cmdline(pid)
        if not cmd or not pid_alive(pid):
            return False
        exe_name = Path(self.binary).name if self.binary else self.binary_name
        if Path(cmd[0]).name != exe_name or not any(str(self.data_dir) in a for a in cmd):
            return False
        self._proc, self._pid = None, pid
        return True

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait(self, timeout_s: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, os.WNOHANG)  # reap it if it is our own child
            if not pid_alive(self._pid):
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _forget(self) -> None:
        _LIVE.pop(id(self), None)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(0)
        self._proc = None
        self._pid = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- mosquitto


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def mqtt_varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining length)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


_probe_seq = 0


def mqtt_probe(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if an MQTT 3.1.1 CONNECT gets a CONNACK: the broker serves (a broker that
    requires a password answers 'not authorized', and that still counts)."""
    global _probe_seq  # noqa: PLW0603
    _probe_seq += 1
    client_id = f"yukimizu-probe-{os.getpid()}-{_probe_seq}"
    var = _mqtt_str("MQTT") + bytes([4, 0x02]) + (10).to_bytes(2, "big")
    payload = var + _mqtt_str(client_id)
    packet = b"\x10" + mqtt_varint(len(payload)) + payload
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(packet)
            resp = b""
            while len(resp) < 4:
                chunk = s.recv(4 - len(resp))
                if not chunk:
                    return False
                resp += chunk
            ok = resp[0] == 0x20
            with contextlib.suppress(OSError):
                s.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False


@dataclass(eq=False)
class Mosquitto(Service):
    """mosquitto 2.x with persistence, anonymous access, one loopback listener.

    ``max_inflight_messages=None`` keeps the broker default (20 for clients that do not send
    ReceiveMaximum), like a production broker; 0 means unlimited.
    ``autosave_interval=None`` keeps the default (1800 s; a SIGKILL loses queued messages
    since the last save).  ``extra_conf`` is appended verbatim.
    """

    extra_conf: str = ""
    # A whole configuration instead of the generated one (e.g. deploy/mosquitto/*.conf
    # with local paths): "{port}" is this instance's port; only logging (and, as root,
    # "user root") is added.
    conf: str | None = None
    max_queued_messages: int = 1_000_000
    max_inflight_messages: int | None = None
    autosave_interval: int | None = None

    name: ClassVar[str] = "mosquitto"
    binary_name: ClassVar[str] = "mosquitto"
    apt_package: ClassVar[str] = "mosquitto"
    scheme: ClassVar[str] = "mqtt"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def config_text(self) -> str:
        if self.conf is not None:
            own = [
                "# devtools.localstack: a given configuration, rewritten at every start",
                f"log_dest file {self.log_path}",
                "log_type all",
                *(["user root"] if os.geteuid() == 0 else []),
            ]
            return "\n".join(own) + "\n" + self.conf.replace("{port}", str(self.port)) + "\n"
        lines = [
            "# generated by devtools.localstack; rewritten at every start",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.max_inflight_messages is not None:
            lines.append(f"max_inflight_messages {self.max_inflight_messages}")
        if self.autosave_interval is not None:
            lines.append(f"autosave_interval {self.autosave_interval}")
        if os.geteuid() == 0:
            # otherwise mosquitto switches to user "mosquitto" and cannot write data_dir
            lines.append("user root")
        text = "\n".join(lines) + "\n"
        if self.extra_conf:
            text += self.extra_conf.rstrip("\n") + "\n"
        return text

    def _prepare(self) -> list[str]:
        self.conf_path.write_text(self.config_text())
        return ["-c", str(self.conf_path)]

    def _ready(self) -> bool:
        return mqtt_probe(self.host, self.port)


# --------------------------------------------------------------------------- influxdb 1.x


class InfluxError(RuntimeError):
    """InfluxDB answered with an error status or an error in the result."""


@dataclass(eq=False)
class InfluxDB1(Service):
    """influxd 1.x (tested with Debian's 1.6.7): v1 HTTP API only.

    ``rpc_port=0``: the RPC (backup/restore) listener gets a fresh free port at each start.
    ``log_level``: influxd's [logging] level (error, warn, info, debug).
    ``auth_enabled``: require users (create the first admin with ``CREATE USER`` while
    none exists); ``credentials`` are then used by :meth:`query` and :meth:`write`.
    """

    rpc_port: int = 0
    log_level: str = "warn"
    auth_enabled: bool = False
    credentials: tuple[str, str] | None = None

    _rpc_bind: int = field(default=0, init=False, repr=False)

    name: ClassVar[str] = "influxdb"
    binary_name: ClassVar[str] = "influxd"
    apt_package: ClassVar[str] = "influxdb"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "influxdb.conf"

    def config_text(self) -> str:
        d = self.data_dir
        return f"""\
# generated by devtools.localstack; rewritten at every start
reporting-enabled = false
bind-address = "{self.host}:{self._rpc_bind}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {"true" if self.auth_enabled else "false"}
  log-enabled = false
  write-tracing = false

[ifql]
  enabled = false

[logging]
  format = "logfmt"
  level = "{self.log_level}"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
"""

    def _prepare(self) -> list[str]:
        # RPC port (backup/restore only): a fresh one per start unless pinned
        self._rpc_bind = self.rpc_port or free_port()
        self.conf_path.write_text(self.config_text())
        return ["run", "-config", str(self.conf_path)]

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _ready(self) -> bool:
        return _http_status(f"{self.url}/ping") == 204

    # ----------------------------------------------------------------- helpers
    def query(self, q: str, db: str | None = None, epoch: str = "ms") -> dict[str, Any]:
        """Run InfluxQL (POST /query, so SELECT and CREATE/DROP alike); raise on any error."""
        params = {"q": q, "epoch": epoch}
        if db is not None:
            params["db"] = db
        auth = ""
        if self.credentials is not None:
            # influxd 1.x reads u/p from the URL only, not from a form body
            u, p = self.credentials
            auth = "?" + urllib.parse.urlencode({"u": u, "p": p})
        status, body = _http(
            "POST",
            f"{self.url}/query{auth}",
            urllib.parse.urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            result: dict[str, Any] = json.loads(body)
        except ValueError:
            raise InfluxError(f"/query HTTP {status}: {body[:500]!r}") from None
        errors = [result["error"]] if "error" in result else []
        errors += [r["error"] for r in result.get("results", []) if "error" in r]
        if status >= 300 or errors:
            raise InfluxError(f"/query HTTP {status}: {'; '.join(errors) or body[:500]!r}")
        return result

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(
        self,
        lines: str | Iterable[str],
        db: str,
        precision: str = "ms",
        rp: str | None = None,
    ) -> None:
        """POST line protocol to /write; raise InfluxError unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        if self.credentials is not None:
            params["u"], params["p"] = self.credentials
        status, resp = _http(
            "POST", f"{self.url}/write?{urllib.parse.urlencode(params)}", body.encode()
        )
        if status != 204:
            raise InfluxError(f"/write HTTP {status}: {resp[:500]!r}")

    def count(self, measurement: str, field: str, db: str) -> int:
        """``COUNT(field)`` over a measurement; 0 while the database does not exist yet."""
        try:
            rows = self.series(f'SELECT COUNT("{field}") FROM "{measurement}"', db)
        except InfluxError as exc:
            if "database not found" in str(exc):
                return 0
            raise
        return int(rows[0]["count"]) if rows else 0

    def series(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Flattened rows of all series of the first statement: [{column: value, ...}, ...]."""
        rows: list[dict[str, Any]] = []
        for s in self.query(q, db)["results"][0].get("series", []):
            tags = s.get("tags", {})
            rows += [{**tags, **dict(zip(s["columns"], v, strict=True))} for v in s["values"]]
        return rows


# --------------------------------------------------------------------------- victoria-metrics


@dataclass(eq=False)
class VictoriaMetrics(Service):
    """Single-node VictoriaMetrics: accepts /api/v2/write (influx line protocol)."""

    retention: str = "100y"
    extra_args: list[str] = field(default_factory=list)

    name: ClassVar[str] = "victoria-metrics"
    binary_name: ClassVar[str] = "victoria-metrics"
    apt_package: ClassVar[str] = "victoria-metrics"

    def _prepare(self) -> list[str]:
        return [
            f"-storageDataPath={self.data_dir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            f"-retentionPeriod={self.retention}",
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        return _http_status(f"{self.url}/health") == 200

    def flush(self) -> None:
        _http("GET", f"{self.url}/internal/force_flush")

    def export(
        self, match: str, min_samples: int = 0, timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """GET /api/v1/export?match[]=...: [{"metric": {...}, "values": [...],
        "timestamps": [ms...]}].  With min_samples > 0, poll (up to timeout_s) until at
        least that many samples are visible (fresh writes take ~1 s to show up)."""
        url = f"{self.url}/api/v1/export?{urllib.parse.urlencode({'match[]': match})}"
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            status, body = _http("GET", url)
            if status != 200:
                raise RuntimeError(f"export HTTP {status}: {body[:500]!r}")
            out = [json.loads(line) for line in body.splitlines() if line.strip()]
            n = sum(len(s.get("timestamps", [])) for s in out)
            if n >= min_samples or time.monotonic() > deadline:
                return out
            time.sleep(0.1)


# --------------------------------------------------------------------------- CLI functions

SERVICE_CLASSES: dict[str, type[Service]] = {
    c.name: c for c in (Mosquitto, InfluxDB1, VictoriaMetrics)
}


class ServiceStatus(NamedTuple):
    name: str
    port: int
    pid: int | None
    running: bool


def ensure_installed(names: Iterable[str] = SERVICE_CLASSES) -> list[str]:
    """Apt package names to install for the missing binaries (empty: all present).

    Does not install anything: ``apt-get install -y <returned names>``.
    """
    missing: list[str] = []
    for name in names:
        cls = SERVICE_CLASSES[name]
        if _find_binary(cls.binary_name) is None:
            log.warning("binary %s not found (apt package %s)", cls.binary_name, cls.apt_package)
            missing.append(cls.apt_package)
    return missing


def _load_state(data_dir: Path) -> dict[str, dict[str, Any]]:
    path = data_dir / SERVICES_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("ignoring corrupt %s", path)
        return {}
    services: dict[str, dict[str, Any]] = state.get("services", {})
    return services


def _save_state(data_dir: Path, services: dict[str, dict[str, Any]]) -> None:
    path = data_dir / SERVICES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": 1, "services": services}, indent=2) + "\n")
    tmp.replace(path)


def _instance(name: str, data_dir: Path, port: int, detached: bool) -> Service:
    return SERVICE_CLASSES[name](data_dir=data_dir / name, port=port, detached=detached)


def up(
    data_dir: Path,
    mqtt_port: int = 0,
    influx_port: int = 0,
    vm_port: int | None = 0,
    timeout_s: float = 30,
) -> dict[str, dict[str, Any]]:
    """Start detached daemons under data_dir/<name>/ and record them in data_dir/services.json.

    Port 0: reuse the port recorded by an earlier ``up`` if it is free, else a free port.
    ``vm_port=None``: no VictoriaMetrics.  Idempotent: a recorded instance that is still
    running is left alone.  Returns {name: {"port", "pid", "url", "data_dir", "log"}}.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(data_dir)
    wanted: dict[str, int] = {"mosquitto": mqtt_port, "influxdb": influx_port}
    if vm_port is not None:
        wanted["victoria-metrics"] = vm_port
    result: dict[str, dict[str, Any]] = {}
    for name, port in wanted.items():
        rec = state.get(name, {})
        old_port = int(rec.get("port") or 0)
        svc = _instance(name, data_dir, old_port, detached=True)
        if rec.get("pid") and svc.adopt(int(rec["pid"])):
            if port and port != old_port:
                log.warning("%s already running on port %d (asked for %d)", name, old_port, port)
            log.info("%s already running at %s (pid %s)", name, svc.url, svc.pid)
        else:
            if port:
                svc.port = port
            elif old_port and port_open(svc.host, old_port):
                svc.port = 0  # recorded port taken by something else
            svc.start(timeout_s)
        rec = {
            "port": svc.port,
            "pid": svc.pid,
            "url": svc.url,
            "data_dir": str(svc.data_dir),
            "log": str(svc.log_path),
        }
        state[name] = result[name] = rec
        _save_state(data_dir, state)
    return result


def down(data_dir: Path, timeout_s: float = 30) -> list[str]:
    """Stop the daemons recorded in data_dir/services.json; returns the names stopped.

    Ports stay recorded so that the next ``up`` reuses them.
    """
    data_dir = Path(data_dir).resolve()
    state = _load_state(data_dir)
    stopped: list[str] = []
    for name, rec in state.items():
        if name not in SERVICE_CLASSES:
            continue
        pid = rec.get("pid")
        svc = _instance(name, data_dir, int(rec.get("port") or 0), detached=True)
        if pid and svc.adopt(int(pid)):
            svc.stop(timeout_s)
            stopped.append(name)
        rec["pid"] = None
    if state:
        _save_state(data_dir, state)
    return stopped


def status(data_dir: Path) -> list[ServiceStatus]:
    """(name, port, pid, running) for each service recorded in data_dir/services.json."""
    data_dir = Path(data_dir).resolve()
    out: list[ServiceStatus] = []
    for name, rec in _load_state(data_dir).items():
        if name not in SERVICE_CLASSES:
            continue
        port = int(rec.get("port") or 0)
        pid: int | None = int(rec["pid"]) if rec.get("pid") else None
        svc = _instance(name, data_dir, port, detached=True)
        running = pid is not None and svc.adopt(pid)
        out.append(ServiceStatus(name, port, pid, running))
    return out
