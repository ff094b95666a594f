""" "Tell me when my road is done" in headless Chromium at a phone's width, against
``public serve`` with its push endpoint (docs/public.md#web-push).

Headless Chromium has no push service (its FCM connection is closed here), so:

- with the browser's own PushManager the page registers its service worker, fetches
  the key, is granted the permission, and then the push service never answers: the
  page says so and sends the town's server nothing;
- with PushManager.subscribe/getSubscription replaced by a stand-in that returns the
  test receiver's endpoint and keys (the one seam: where the browser would ask its
  push service), the rest is real: the page posts the subscription, follows a change
  of road, the sender's notice is decrypted by the receiver, and unsubscribing
  removes it from the server's store.

Not covered: the browser's real push service and the service worker's ``push`` event
(sw.js shows the notice; Chromium offers no way to deliver a push message to it from
Selenium without a push service).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.public_support import AT_MS, MIN, browser, have_browser
from tests.push_support import receiving
from tests.test_public_browser import console_problems, open_page
from tests.test_public_myroad import logged
from tests.test_public_push import Push, Site, _push, site

__all__ = ["site"]  # the fixture, shared with tests/test_public_push.py

pytestmark = pytest.mark.skipif(
    not have_browser(), reason="chromium / chromium-driver not installed (scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser() as d:
        yield d


@pytest.fixture
def push(site: Site, tmp_path: Path) -> Iterator[Push]:
    yield from _push(site, tmp_path)


def wait_text(driver: Any, element_id: str, cond: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 15
    while True:
        text: str = driver.find_element("id", element_id).text
        if cond(text):
            return text
        assert time.monotonic() < deadline, f"#{element_id}: {text!r}"
        time.sleep(0.1)


def visit(driver: Any, url: str, extra_script: str = "") -> None:
    """The page at a phone's width, notifications allowed, with ``extra_script`` run
    before the page's own scripts."""
    origin = url.rstrip("/")
    driver.execute_cdp_cmd(
        "Browser.grantPermissions", {"permissions": ["notifications"], "origin": origin}
    )
    added = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.yukimizuPushTimeoutMs = 3000;" + extra_script},
    )
    try:
        open_page(driver, url, now_ms=AT_MS + MIN, phone=True)
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]}
        )


def start(driver: Any, push: Push, requests: list[str], extra_script: str = "") -> str:
    push.server.http.handler = logged(push.server.handle, requests)
    url = f"http://127.0.0.1:{push.port}/"
    visit(driver, url, extra_script)
    driver.execute_script("localStorage.clear(); localStorage.setItem('yukimizu.myRoad', 'R013')")
    visit(driver, url, extra_script)
    assert driver.find_element("id", "push").is_displayed()
    assert driver.find_element("id", "push-toggle").text == "除雪が終わったら通知する"
    return url


def test_without_a_push_service_the_page_says_so_and_sends_nothing(driver: Any, push: Push) -> None:
    requests: list[str] = []
    start(driver, push, requests)
    driver.find_element("id", "push-toggle").click()
    text = wait_text(driver, "push-status", lambda t: "準備" not in t and t != "")
    assert text == "通知サービスに接続できませんでした。しばらくしてからお試しください。"
    assert driver.find_element("id", "push-toggle").text == "除雪が終わったら通知する"
    scope = driver.execute_async_script(
        "var done = arguments[0];"
        "navigator.serviceWorker.getRegistration().then(function (r) {"
        "  done(r && r.active ? r.scope : null); });"
    )
    assert scope == f"http://127.0.0.1:{push.port}/"
    assert driver.execute_script("return Notification.permission") == "granted"
    assert any(r.startswith("GET /push/key ") for r in requests)
    assert any(r.startswith("GET /sw.js") for r in requests)
    assert not any(r.startswith("POST ") for r in requests), requests
    assert push.store.count() == 0
    assert console_problems(driver) == []


STAND_IN = """
(function () {
  var fake = %s;
  function current() {
    return { endpoint: fake.endpoint, toJSON: function () { return fake; },
             unsubscribe: function () {
               localStorage.removeItem("test.sub"); return Promise.resolve(true); } };
  }
  PushManager.prototype.subscribe = function (opts) {
    var key = new Uint8Array(opts.applicationServerKey);
    localStorage.setItem("test.key", btoa(String.fromCharCode.apply(null, key))
      .replace(/[+]/g, "-").replace(/[/]/g, "_").replace(/=+$/, ""));
    localStorage.setItem("test.sub", "1");
    return Promise.resolve(current());
  };
  PushManager.prototype.getSubscription = function () {
    return Promise.resolve(localStorage.getItem("test.sub") ? current() : null);
  };
})();
"""


def test_subscribe_follow_the_road_notice_and_unsubscribe(
    driver: Any, push: Push, site: Site
) -> None:
    requests: list[str] = []
    with receiving() as rx:
        _b, sub = rx.browser("chromium")
        stand_in = STAND_IN % json.dumps(sub)
        url = start(driver, push, requests, stand_in)
        driver.find_element("id", "push-toggle").click()
        text = wait_text(driver, "push-status", lambda t: "準備" not in t and t != "")
        assert text == "除雪が終わったらこの端末に通知します（今シーズン末まで）。"
        assert driver.find_element("id", "push-toggle").text == "通知をやめる"
        # subscribed with the server's key, for the chosen road only
        key = driver.execute_script("return localStorage.getItem('test.key')")
        assert key == push.server.push.key.decode()  # type: ignore[union-attr]
        assert push.store.segments(sub["endpoint"]) == {"R013": push.clock[0]}
        posted = [r for r in requests if r.startswith("POST /push/subscribe ")]
        assert len(posted) == 1 and '"segments":["R013"]' in posted[0]
        # another road from the map: the subscription follows it
        driver.execute_script(
            "var l = window.yukimizuPublic.segments.R007; l.openPopup();"
            "l.getPopup().getElement().querySelector('button.choose-road').click();"
        )
        wait_text(driver, "push-status", lambda t: t == "通知する道路を変更しました。")
        assert push.store.segments(sub["endpoint"]) == {"R007": push.clock[0]}
        # the next build's round: the receiver decrypts the notice for that road
        assert push.round(AT_MS, site.snap.segments) == {"expired": 0, "sent": 1}
        [got] = rx.received
        assert got.payload is not None and rx.errors == []
        assert got.payload["body"] == f"{site.names['R007']}の除雪が終わりました（08:00）"
        # a reload remembers it; the button stops it
        visit(driver, url, stand_in)
        assert driver.find_element("id", "push-toggle").text == "通知をやめる"
        driver.find_element("id", "push-toggle").click()
        wait_text(driver, "push-status", lambda t: t == "通知を停止しました。")
        assert push.store.count() == 0
        assert driver.find_element("id", "push-toggle").text == "除雪が終わったら通知する"
        assert any(r.startswith("POST /push/unsubscribe ") for r in requests)
        assert console_problems(driver) == []
