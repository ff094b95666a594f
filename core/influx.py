"""InfluxDB writers: v1 ``/write`` and v2 ``/api/v2/write``.

Both take already-encoded line protocol (millisecond precision) and raise
:class:`WriteError`, which says whether the failure means "InfluxDB is not there"
(spool and retry) or "InfluxDB refused these points" (find the bad ones). Nothing
from urllib3 or influxdb-client leaves this module.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from typing import Protocol

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from core.config import InfluxConfig

log = logging.getLogger(__name__)


class WriteError(Exception):
    """A failed write. ``bad_data`` is True when InfluxDB rejected the points."""

    def __init__(self, message: str, status: int | None, bad_data: bool) -> None:
        super().__init__(message)
        self.status = status
        self.bad_data = bad_data


def classify(status: int | None, body: str) -> WriteError:
    """Map an HTTP answer to a WriteError.

    400/422 is bad data. 413 is a batch too large (bisecting finds a size that
    fits). Everything else (5xx, 429, 401/403 auth, 404 missing database, no
    answer) is "not available now": the points are fine, keep them for later.
    """
    text = body.strip()[:500]
    if status in (400, 413, 422):
        return WriteError(f"InfluxDB rejected the batch ({status}): {text}", status, True)
    if status is None:
        return WriteError(f"InfluxDB unreachable: {text}", None, False)
    hint = {
        401: " (check influx.username/password or influx.token)",
        403: " (the user or token may not write here, or may not CREATE DATABASE: "
        "set influx.create_database = false)",
        404: " (database or bucket missing, or the wrong influx.api for this server)",
    }.get(status, "")
    return WriteError(f"InfluxDB answered {status}: {text}{hint}", status, False)


class Writer(Protocol):
    def write(self, lines: Sequence[str]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class V1Writer:
    """InfluxDB 1.x ``/write?db=&rp=&precision=ms``."""

    def __init__(self, cfg: InfluxConfig) -> None:
        self._cfg = cfg
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=2,
            timeout=urllib3.Timeout(connect=min(cfg.timeout_s, 5.0), read=cfg.timeout_s),
            retries=False,
        )
        base = cfg.url.rstrip("/")
        self._url = f"{base}/write"
        self._query_url = f"{base}/query"
        self._fields: dict[str, str] = {"db": cfg.database, "precision": "ms"}
        if cfg.retention_policy:
            self._fields["rp"] = cfg.retention_policy
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password else ""
            self._headers.update(urllib3.make_headers(basic_auth=f"{cfg.username}:{pw}"))
        self._db_checked = not cfg.create_database

    def describe(self) -> str:
        return f"InfluxDB v1 {self._cfg.url} db={self._cfg.database}"

    def _ensure_database(self) -> None:
        # CREATE DATABASE is idempotent in InfluxDB 1.x.
        name = self._cfg.database.replace('"', '\\"')
        resp = self._http.request(
            "POST",
            self._query_url,
            fields={"q": f'CREATE DATABASE "{name}"'},
            encode_multipart=False,
            headers={k: v for k, v in self._headers.items() if k != "Content-Type"},
        )
        if resp.status >= 300:
            raise classify(resp.status, resp.data.decode("utf-8", "replace"))
        self._db_checked = True

    def write(self, lines: Sequence[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        try:
            if not self._db_checked:
                self._ensure_database()
            url = self._url + "?" + urllib.parse.urlencode(self._fields)
            resp = self._http.request("POST", url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise classify(None, str(exc)) from exc
        if resp.status >= 300:
            text = resp.data.decode("utf-8", "replace")
            if resp.status == 404 and self._cfg.create_database:
                self._db_checked = False  # dropped while we ran: create it on the retry
            raise classify(resp.status, text)

    def close(self) -> None:
        self._http.clear()


class V2Writer:
    """``/api/v2/write`` through influxdb-client (InfluxDB 2.x/3.x/Cloud, 1.8+)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        assert cfg.token is not None and cfg.org and cfg.bucket
        self._cfg = cfg
        self._org: str = cfg.org
        self._bucket: str = cfg.bucket
        self._client = InfluxDBClient(
            url=cfg.url,
            token=cfg.token.get_secret_value(),
            org=cfg.org,
            timeout=int(cfg.timeout_s * 1000),
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def describe(self) -> str:
        return f"InfluxDB v2 {self._cfg.url} org={self._cfg.org} bucket={self._cfg.bucket}"

    def write(self, lines: Sequence[str]) -> None:
        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record="\n".join(lines),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            body = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body or "")
            raise classify(int(exc.status) if exc.status else None, body) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise classify(None, str(exc)) from exc

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def make_writer(cfg: InfluxConfig) -> Writer:
    return V2Writer(cfg) if cfg.api == "v2" else V1Writer(cfg)
