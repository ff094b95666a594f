"""Web Push "tell me when my road is done" (docs/public.md#web-push): subscriptions
through ``public serve``'s endpoint, notices built from the page's own snapshot,
encrypted and signed by the sender and decrypted by a local receiver as a browser
would (tests/push_support.py); the push services' 404/410/429; hostile requests."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from py_vapid import Vapid02

from core.config import ConfigError
from devtools.localstack import InfluxDB1
from publicpage.build import build
from publicpage.config import PublicConfig, PushConfig, load_public_config
from publicpage.push import PushStore, season_end_ms
from publicpage.pushsend import Sender, application_server_key, load_vapid, send_round
from publicpage.pushserve import PushEndpoint
from publicpage.serve import Server
from publicpage.snapshot import Snapshot
from tests.public_support import (
    AT_MS,
    HOUR,
    MIN,
    query_client,
    registry,
    sample_config,
    synthetic_lines,
)
from tests.push_support import Receiver, post_json, receiving


@dataclass
class Site:
    out: Path
    snap: Snapshot
    names: dict[str, str]


@pytest.fixture(scope="module")
def site(influx: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Site:
    db = f"publicpush{os.getpid()}"
    influx.create_database(db)
    influx.write(synthetic_lines(registry()), db)
    out = tmp_path_factory.mktemp("pushsite")
    client = query_client(influx, db)
    try:
        snap = build(PublicConfig(), registry(), client, out, AT_MS)
    finally:
        client.close()
    return Site(out, snap, {s["id"]: s["name"] for s in snap.segments})


@dataclass
class Push:
    server: Server
    store: PushStore
    pcfg: PushConfig
    vapid: Vapid02
    clock: list[int]  # the endpoint's "now" (ms), settable

    @property
    def port(self) -> int:
        return self.server.server_port

    def subscribe(self, sub: dict[str, Any], segments: list[str]) -> tuple[int, bytes]:
        status, _h, body = post_json(
            self.port, "/push/subscribe", json.dumps({**sub, "segments": segments}).encode()
        )
        return status, body

    def round(self, at_ms: int, segments: list[dict[str, Any]]) -> dict[str, int]:
        sender = Sender(self.vapid, self.pcfg)
        try:
            return dict(send_round(self.store, segments, at_ms, sender, self.pcfg))
        finally:
            sender.close()


@pytest.fixture
def push(site: Site, tmp_path: Path) -> Iterator[Push]:
    yield from _push(site, tmp_path)


def _push(site: Site, tmp_path: Path, **cfg: Any) -> Generator[Push]:
    vapid = Vapid02()
    vapid.generate_keys()
    vapid.save_key(str(tmp_path / "vapid.pem"))
    pcfg = PushConfig(
        vapid_key_file=tmp_path / "vapid.pem",
        subject="mailto:josetsu@town.example.jp",
        store=tmp_path / "push.sqlite",
        services=("127.0.0.1",),
        **cfg,
    )
    store = PushStore(pcfg.store)
    clock = [AT_MS - 2 * HOUR]
    endpoint = PushEndpoint(pcfg, store, application_server_key(vapid), clock_ms=lambda: clock[0])
    server = Server(site.out, "127.0.0.1", 0, push=endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Push(server, store, pcfg, load_vapid(pcfg.vapid_key_file or Path()), clock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        store.close()


def test_a_plowed_road_is_notified_once_encrypted_for_the_browser(site: Site, push: Push) -> None:
    with receiving() as rx:
        _b, sub = rx.browser("a")
        # R007 was plowed 30 min before AT, R001 18 h before: only R007 is news to a
        # resident who subscribed 2 h before AT
        status, body = push.subscribe(sub, ["R007", "R001"])
        assert (status, body) == (201, b'{"ok":true}')
        assert push.round(AT_MS, site.snap.segments) == {"expired": 0, "sent": 1}
        assert rx.errors == []
        [got] = rx.received
        assert got.status == 201 and got.payload is not None and got.claims is not None
        assert got.payload["title"] == "除雪のお知らせ"
        assert got.payload["body"] == f"{site.names['R007']}の除雪が終わりました（08:00）"
        assert got.claims["sub"] == "mailto:josetsu@town.example.jp"
        # signed with the key the page subscribes with
        key = post_json_get(push.port, "/push/key")
        assert got.claims["k"] == key
        # once: the next build's round has nothing new
        assert push.round(AT_MS + MIN, site.snap.segments) == {"expired": 0}
        assert len(rx.received) == 1
        # the same subscription again (e.g. another road added) keeps what was notified
        assert push.subscribe(sub, ["R007", "R008"])[0] == 200
        assert push.store.count() == 1
        assert push.round(AT_MS + 2 * MIN, site.snap.segments) == {"expired": 0}


def post_json_get(port: int, path: str) -> str:
    import http.client  # noqa: PLC0415

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


def test_gone_subscriptions_are_dropped(site: Site, push: Push) -> None:
    with receiving() as rx:
        _b1, gone404 = rx.browser("gone404")
        _b2, gone410 = rx.browser("gone410")
        _b3, alive = rx.browser("alive")
        rx.answers["/push/gone404"] = [(404, {})]
        rx.answers["/push/gone410"] = [(410, {})]
        for sub in (gone404, gone410, alive):
            assert push.subscribe(sub, ["R007"])[0] == 201
        counts = push.round(AT_MS, site.snap.segments)
        assert counts == {"expired": 0, "dropped": 2, "sent": 1}
        assert push.store.count() == 1
        assert push.store.segments(alive["endpoint"]) == {"R007": AT_MS - 30 * MIN}
        assert push.store.segments(gone404["endpoint"]) == {}
        assert rx.errors == []


def test_429_is_honoured_with_retry_after(site: Site, push: Push) -> None:
    with receiving() as rx:
        _b, sub = rx.browser("busy")
        _b2, other = rx.browser("other")  # same push service (host): also held back
        rx.answers["/push/busy"] = [(429, {"Retry-After": "120"})]
        assert push.subscribe(sub, ["R007"])[0] == 201
        assert push.subscribe(other, ["R007"])[0] == 201
        first = push.round(AT_MS, site.snap.segments)
        assert first == {"expired": 0, "deferred": 2}
        assert [r.path for r in rx.received] == ["/push/busy"]
        # 60 s later the service is still not asked anything
        assert push.round(AT_MS + 60_000, site.snap.segments) == {"expired": 0, "deferred": 2}
        assert len(rx.received) == 1
        # after Retry-After both go out, once each
        assert push.round(AT_MS + 121_000, site.snap.segments) == {"expired": 0, "sent": 2}
        assert sorted(r.path for r in rx.received[1:]) == ["/push/busy", "/push/other"]
        assert all(r.payload is not None for r in rx.received[1:]) and rx.errors == []


def test_subscriptions_expire_at_the_end_of_the_season(site: Site, push: Push) -> None:
    with receiving() as rx:
        _b, sub = rx.browser("season")
        assert push.subscribe(sub, ["R007"])[0] == 201
        end = season_end_ms(push.clock[0], "04-30")
        assert end == int(__import__("datetime").datetime.fromisoformat(
            "2026-05-01T00:00:00+09:00").timestamp() * 1000)  # fmt: skip
        assert push.round(end, site.snap.segments) == {"expired": 1}
        assert push.store.count() == 0 and rx.received == []


def test_unsubscribe(site: Site, push: Push) -> None:
    with receiving() as rx:
        _b, sub = rx.browser("bye")
        assert push.subscribe(sub, ["R007"])[0] == 201
        status, _h, body = post_json(
            push.port, "/push/unsubscribe", json.dumps({"endpoint": sub["endpoint"]}).encode()
        )
        assert (status, body) == (200, b'{"ok":true}')
        assert push.store.count() == 0
        assert push.round(AT_MS, site.snap.segments) == {"expired": 0}
        assert rx.received == []


# ----------------------------------------------------------------------- hostile


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out  # the server closed the connection


def test_hostile_subscription_requests(site: Site, push: Push) -> None:
    rx = Receiver()
    try:
        _b, sub = rx.browser("h")
        good = {**sub, "segments": ["R007"]}
        cases: list[tuple[bytes, int, str]] = [
            (b"{not json", 400, "body: not JSON"),
            (b"[1, 2]", 400, "body: must be a JSON object"),
            (
                json.dumps(
                    {**good, "keys": {"p256dh": "AAAA", "auth": sub["keys"]["auth"]}}
                ).encode(),
                400,
                "keys.p256dh: must be 65 bytes in base64url",
            ),
            (
                json.dumps({**good, "keys": {"p256dh": sub["keys"]["p256dh"]}}).encode(),
                400,
                "keys.auth: must be 16 bytes in base64url",
            ),
            # the sender would POST there: not a push service, not sent anything
            (
                json.dumps({**good, "endpoint": "https://example.com/x"}).encode(),
                400,
                "endpoint: not one of the allowed push services",
            ),
            (
                json.dumps({**good, "endpoint": "http://10.1.2.3/x"}).encode(),
                400,
                "endpoint: not one of the allowed push services",
            ),
            (
                json.dumps({**good, "segments": ["R999"]}).encode(),
                400,
                "segments: unknown segment id",
            ),
            (
                json.dumps({**good, "segments": [f"R{i:03d}" for i in range(11)]}).encode(),
                400,
                "segments: must be a list of 1 to 10 ids",
            ),
        ]
        for body, want, why in cases:
            status, headers, answer = post_json(push.port, "/push/subscribe", body)
            assert (status, json.loads(answer)) == (want, {"error": why}), body[:80]
            assert len(answer) <= len(body) + 64  # short, never an echo of the request
            assert headers["content-type"] == "application/json"
        status, _h, _b2 = post_json(push.port, "/push/subscribe", json.dumps(good).encode(),
                                    ctype="text/plain")  # fmt: skip
        assert status == 415
        assert push.store.count() == 0
        # a body over max_body_bytes is refused unread and the connection closed
        big = json.dumps({**good, "pad": "x" * push.pcfg.max_body_bytes}).encode()
        answer = raw_exchange(
            push.port,
            b"POST /push/subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(big) + big,
        )
        assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
        # POST elsewhere is not a way in; the page is still served
        status, _h, _b3 = post_json(push.port, "/index.html", b"{}")
        assert status == 405
        assert post_json_get(push.port, "/push/key")
    finally:
        rx.close()


def test_too_many_subscriptions_and_the_rate_limit(site: Site, tmp_path: Path) -> None:
    gen = _push(site, tmp_path, max_subscriptions=3, subscribe_per_min=5)
    push = next(gen)
    rx = Receiver()
    try:
        answers = [push.subscribe(rx.browser(f"s{i}")[1], ["R007"]) for i in range(6)]
        assert [a[0] for a in answers[:3]] == [201, 201, 201]
        assert answers[3] == (503, b'{"error":"subscriptions full"}')
        assert answers[4][0] == 503
        # the sixth in the same minute: over the bucket of 5 a minute
        assert answers[5] == (429, b'{"error":"too many requests"}')
        status, headers, _b = post_json(push.port, "/push/unsubscribe", b"{}")
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 12
        assert push.store.count() == 3
    finally:
        rx.close()
        gen.close()


def test_push_config_errors_name_the_field() -> None:
    cfg = sample_config()

    def load(push: dict[str, Any]) -> PushConfig:
        return load_public_config(cfg.model_copy(update={"public": {"push": push}})).push

    assert not load({}).enabled
    with pytest.raises(ConfigError, match=r"public\.push\.subject: required"):
        load({"vapid_key_file": "vapid.pem"})
    with pytest.raises(ConfigError, match=r"public\.push\.season_end"):
        load({"season_end": "4/30"})
    with pytest.raises(ConfigError, match=r"public\.push\.subject"):
        load({"subject": "josetsu@town"})
    with pytest.raises(ConfigError, match=r"public\.push\.sevices: unknown key"):
        load({"sevices": []})
    pc = load({"vapid_key_file": "vapid.pem", "subject": "mailto:a@town.example.jp"})
    assert pc.enabled and pc.vapid_key_file == cfg.base_dir / "vapid.pem"
    assert pc.store == cfg.base_dir / ".yukimizu" / "push.sqlite"


def test_vapid_key_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"public\.push\.vapid_key_file: cannot read"):
        load_vapid(tmp_path / "missing.pem")
    assert not (tmp_path / "missing.pem").exists()  # no new key made behind our back
    (tmp_path / "bad.pem").write_text("-----BEGIN EC PRIVATE KEY-----\nxx\n")
    with pytest.raises(ConfigError, match=r"is not a private key in PEM"):
        load_vapid(tmp_path / "bad.pem")
