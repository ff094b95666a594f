"""docs/alerts.md is real: its sample ``[alerts]`` block validates, and the anchors the
code cites exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from alerts.config import load_alerts_config
from core.config import Config, ConfigError
from tests.conftest import REPO

DOC = REPO / "docs" / "alerts.md"


def test_sample_block_validates(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    data = tomllib.loads(blocks[0])
    cfg = Config.model_validate({**data, "base_dir": tmp_path})
    env = {"SMTP_PASSWORD": "x", "LINE_CHANNEL_TOKEN": "y", "YUKIMIZU_ACK_SECRET": "z"}
    env |= {"LINEWORKS_CLIENT_SECRET": "cs", "LINEWORKS_BOT_SECRET": "bs"}
    key = tmp_path / "lineworks" / "private_20260101.key"
    with pytest.raises(ConfigError, match=r"lineworks\.private_key_file: no such file"):
        load_alerts_config(cfg, environ=env)
    key.parent.mkdir()
    key.write_text("-----BEGIN PRIVATE KEY-----\n")  # read when a token is needed
    ac = load_alerts_config(cfg, environ=env)
    assert ac.receivers["sato"].channels() == ["line", "email"]
    lw = ac.receivers["tanaka"].lineworks
    assert lw is not None and lw.private_key_file == key and lw.bot_id == "2000001"
    email = ac.receivers["kacho"].email
    assert email is not None and email.host == "smtp.town.example.jp"
    assert ac.route_for("snow.dispatch", "snow", "critical", None) == 0
    assert ac.route_for("water.meter_stale", "water", "info", None) == 1
    assert ac.route_for("water.burst", "water", "critical", None) == 2


def test_cited_anchors_exist() -> None:
    headings = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", DOC.read_text(encoding="utf-8"), flags=re.M)
    }
    cited = set()
    for path in (REPO / "alerts").glob("*.py"):
        cited |= set(re.findall(r"docs/alerts\.md#([\w-]+)", path.read_text(encoding="utf-8")))
    assert cited and cited <= headings, cited - headings
