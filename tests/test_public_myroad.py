"""My road (docs/public.md#my-road) in a real browser at a phone's width: a resident
finds a road in the searchable list with the keyboard, the page shows that road's
state and when it will be plowed as text, the choice survives a reload, and nothing
of it reaches the server (the server's own request log says so)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.httpserve import Request, Response
from devtools.localstack import InfluxDB1
from tests.public_support import (
    AT_MS,
    browser,
    build_site,
    have_browser,
    registry,
    serving,
    synthetic_lines,
)
from tests.test_public import eta_lines
from tests.test_public_browser import console_problems, open_page

pytestmark = pytest.mark.skipif(
    not have_browser(), reason="chromium / chromium-driver not installed (scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser() as d:
        yield d


@pytest.fixture(scope="module")
def site(influx: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = f"publicmy{os.getpid()}"
    influx.create_database(db)
    influx.write(synthetic_lines(registry()) + eta_lines(AT_MS), db)
    return build_site(influx, db, tmp_path_factory.mktemp("my"), AT_MS).out


def logged(handler: Callable[[Request], Response], log: list[str]) -> Callable[[Request], Response]:
    """The server's handler, recording every request as the server received it."""

    def wrapped(req: Request) -> Response:
        log.append(f"{req.method} {req.target} {dict(req.headers)!r} {req.body!r}")
        return handler(req)

    return wrapped


def status_text(driver: Any) -> str:
    text: str = driver.find_element("id", "myroad-status").text
    return text


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_pick_my_road_from_the_list_it_stays_in_the_browser(driver: Any, site: Path) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415 (optional dev dependency)
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    requests: list[str] = []
    with serving(site) as server:
        server.http.handler = logged(server.handle, requests)
        url = f"http://127.0.0.1:{server.server_port}/"
        open_page(driver, url, now_ms=AT_MS + 60_000, phone=True)
        driver.execute_script("window.localStorage.clear()")
        open_page(driver, url, now_ms=AT_MS + 60_000, phone=True)
        assert "道路を選ぶと" in status_text(driver)
        # the picker: a labelled search box and the roads as buttons in a list
        driver.find_element(By.CSS_SELECTOR, "#myroad-picker summary").click()
        search = driver.find_element(By.ID, "road-search")
        label = driver.find_element(By.CSS_SELECTOR, "label[for=road-search]").text
        assert label == "道路名で検索"
        all_items = driver.find_elements(By.CSS_SELECTOR, "#road-choices li > button")
        feed = json.loads((site / "data" / "feed.geojson").read_bytes())
        roads = [f for f in feed["features"] if f["properties"]["kind"] == "segment"]
        assert len(all_items) == len(roads) >= 10
        search.send_keys("南環状")
        shown = [
            b.text
            for b in driver.find_elements(By.CSS_SELECTOR, "#road-choices li > button")
            if b.is_displayed()
        ]
        # one road of four segments: each says which segment it is
        assert len(shown) == 4 and "町道南環状線（区間 R013）" in shown, shown
        search.send_keys(" R013")
        shown = [
            b.text
            for b in driver.find_elements(By.CSS_SELECTOR, "#road-choices li > button")
            if b.is_displayed()
        ]
        assert shown == ["町道南環状線（区間 R013）"]
        # keyboard only: Tab from the search box to the one road left, Enter
        search.send_keys(Keys.TAB)
        focused = driver.switch_to.active_element
        assert focused.text == "町道南環状線（区間 R013）"
        focused.send_keys(Keys.ENTER)
        wait_for(lambda: "町道南環状線" in status_text(driver), "my road is not shown")
        text = status_text(driver)
        assert "除雪見込み: 本日の予定 10:30頃（10:20〜10:50）" in text, text
        assert driver.switch_to.active_element.get_attribute("id") == "myroad-status"
        # a reload (a new visit) keeps it, from the browser's own storage
        before = len(requests)
        open_page(driver, url, now_ms=AT_MS + 60_000, phone=True)
        assert len(requests) > before
        text = status_text(driver)
        assert "町道南環状線" in text and "本日の予定 10:30頃" in text, text
        assert driver.execute_script("return localStorage.getItem('yukimizu.myRoad')") == "R013"
        # the map's popup offers the choice too, and knows this one is chosen
        chosen = driver.execute_script(
            "var l = window.yukimizuPublic.segments.R013; l.openPopup();"
            "return l.getPopup().getElement().querySelector('button.choose-road').textContent;"
        )
        assert chosen == "わたしの道路です"
        driver.execute_script(
            "var l = window.yukimizuPublic.segments.R011; l.openPopup();"
            "l.getPopup().getElement().querySelector('button.choose-road').click();"
        )
        wait_for(lambda: "まもなく" in status_text(driver), "the map's choice is not shown")
        assert driver.execute_script("return localStorage.getItem('yukimizu.myRoad')") == "R011"
        assert console_problems(driver) == []
    # the server saw the page, the feed and its assets: never a road id
    assert requests and all(r.startswith("GET ") for r in requests), requests
    leaked = [r for r in requests if "R013" in r or "R011" in r or "myRoad" in r]
    assert leaked == [], leaked
    assert any("/data/feed.geojson" in r for r in requests)
