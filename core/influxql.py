"""InfluxQL over ``/query``: the one read client (rules, public page, reports, tests).

Its own module, apart from the writers in core/influx.py, so that ingest — which only
writes — never loads pandas (tens of MB of a process measured in benchmarks/ingest.py).
"""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd
import urllib3

from core.config import InfluxConfig


class QueryError(Exception):
    """An InfluxQL query failed (unreachable, refused, or a statement error)."""


class InfluxQuery:
    """InfluxQL over ``/query``: native on 1.x, on 2.x through the DBRP mapping (token),
    on 3.x through its v1 compatibility API. Rules, dashboards tests and reports read
    through this one client (docs/architecture.md#influxdb).

    Results come back as plain rows (``{"time": ms, tag: …, field: …}``), epoch
    milliseconds; a caller turns them into pandas itself.
    """

    def __init__(self, cfg: InfluxConfig) -> None:
        self._cfg = cfg
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=2,
            timeout=urllib3.Timeout(connect=min(cfg.timeout_s, 5.0), read=max(cfg.timeout_s, 60)),
            retries=False,
        )
        self._url = cfg.url.rstrip("/") + "/query"
        self._headers: dict[str, str] = {}
        if cfg.api == "v2" and cfg.token is not None:
            self._headers["Authorization"] = f"Token {cfg.token.get_secret_value()}"
        elif cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password else ""
            self._headers.update(urllib3.make_headers(basic_auth=f"{cfg.username}:{pw}"))
        # On 2.x the v1 query API maps db (+ rp) to a bucket through DBRP.
        self.database = cfg.bucket if cfg.api == "v2" and cfg.bucket else cfg.database

    def describe(self) -> str:
        return f"InfluxQL {self._url} db={self.database}"

    def raw(self, q: str, *, method: str = "GET") -> list[dict[str, Any]]:
        """Run one or more statements; the ``results`` list, raising on any error."""
        fields = {"q": q, "db": self.database, "epoch": "ms"}
        if self._cfg.retention_policy and self._cfg.api == "v1":
            fields["rp"] = self._cfg.retention_policy
        try:
            if method == "GET":
                url = self._url + "?" + urllib.parse.urlencode(fields)
                resp = self._http.request("GET", url, headers=self._headers)
            else:
                resp = self._http.request(
                    "POST", self._url, fields=fields, encode_multipart=False, headers=self._headers
                )
        except urllib3.exceptions.HTTPError as exc:
            raise QueryError(f"InfluxDB unreachable at {self._url}: {exc}") from exc
        text = resp.data.decode("utf-8", "replace")
        try:
            body = orjson.loads(resp.data)
        except orjson.JSONDecodeError:
            raise QueryError(f"/query HTTP {resp.status}: {text[:300]}") from None
        errors = [body["error"]] if isinstance(body, dict) and "error" in body else []
        results: list[dict[str, Any]] = body.get("results", []) if isinstance(body, dict) else []
        errors += [r["error"] for r in results if "error" in r]
        if resp.status >= 300 or errors:
            raise QueryError(f"/query HTTP {resp.status}: {'; '.join(errors) or text[:300]}")
        return results

    def frame(self, q: str, str_columns: Sequence[str] = ()) -> pd.DataFrame:
        """One SELECT's rows as a DataFrame (``time`` in epoch ms, tags selected as
        columns), fetched as CSV: parsing a million rows as CSV with pandas is several
        times faster than as JSON (measured in benchmarks/rules.py)."""
        fields = {"q": q, "db": self.database, "epoch": "ms"}
        if self._cfg.retention_policy and self._cfg.api == "v1":
            fields["rp"] = self._cfg.retention_policy
        url = self._url + "?" + urllib.parse.urlencode(fields)
        try:
            resp = self._http.request(
                "GET", url, headers={**self._headers, "Accept": "application/csv"}
            )
        except urllib3.exceptions.HTTPError as exc:
            raise QueryError(f"InfluxDB unreachable at {self._url}: {exc}") from exc
        if resp.status >= 300:
            raise QueryError(f"/query HTTP {resp.status}: {resp.data[:300]!r}")
        if not resp.data.strip():
            # InfluxDB's CSV output drops statement errors ("database not found"):
            # an empty answer is asked again as JSON, which reports them (and is cheap).
            self.raw(q)
            return pd.DataFrame()
        try:
            # Tags stay text: a device named "007" is not the number 7.
            dtype = dict.fromkeys(str_columns, str)
            df = pd.read_csv(io.BytesIO(resp.data), low_memory=False, dtype=dtype)
        except (ValueError, pd.errors.ParserError) as exc:
            raise QueryError(f"/query: unreadable CSV: {exc}") from None
        if "error" in df.columns and len(df.columns) <= 2:
            raise QueryError(f"/query: {df['error'].iloc[0]}")
        return df.drop(columns=[c for c in ("name", "tags") if c in df.columns])

    def frames(
        self, statements: Sequence[str], str_columns: Sequence[str] = ()
    ) -> list[pd.DataFrame]:
        """Several SELECTs in one request: a DataFrame per statement that returned rows
        (InfluxDB's CSV output separates statements by a blank line and a header).
        Nothing at all: the first statement is asked again as JSON with ``LIMIT 1``,
        which reports errors the CSV output drops ("database not found") without
        running every statement twice."""
        fields = {"q": "; ".join(statements), "db": self.database, "epoch": "ms"}
        if self._cfg.retention_policy and self._cfg.api == "v1":
            fields["rp"] = self._cfg.retention_policy
        try:
            resp = self._http.request(
                "POST",
                self._url,
                fields=fields,
                encode_multipart=False,
                headers={**self._headers, "Accept": "application/csv"},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise QueryError(f"InfluxDB unreachable at {self._url}: {exc}") from exc
        if resp.status >= 300:
            raise QueryError(f"/query HTTP {resp.status}: {resp.data[:300]!r}")
        if not resp.data.strip():
            if statements:
                self.raw(statements[0] + " LIMIT 1")
            return []
        out = []
        dtype = dict.fromkeys(str_columns, str)
        for block in resp.data.split(b"\n\n"):
            if not block.strip():
                continue
            try:
                df = pd.read_csv(io.BytesIO(block), low_memory=False, dtype=dtype)
            except (ValueError, pd.errors.ParserError) as exc:
                raise QueryError(f"/query: unreadable CSV: {exc}") from None
            if "error" in df.columns and len(df.columns) <= 2:
                raise QueryError(f"/query: {df['error'].iloc[0]}")
            out.append(df.drop(columns=[c for c in ("name", "tags") if c in df.columns]))
        return out

    def rows(self, q: str) -> list[dict[str, Any]]:
        """Flattened rows of every series of the first statement, tags included."""
        out: list[dict[str, Any]] = []
        results = self.raw(q)
        if not results:
            return out
        for s in results[0].get("series", []):
            tags = s.get("tags") or {}
            cols = s["columns"]
            out.extend({**tags, **dict(zip(cols, v, strict=True))} for v in s["values"])
        return out

    def close(self) -> None:
        self._http.clear()
