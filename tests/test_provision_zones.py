"""``device remove`` keeps the registry loadable with work zones: a plow still listed in
its zone (zones.csv) is refused, naming the file, line and column, and nothing is
changed; ``device add`` validates against the zones too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.config import load_config, load_registry
from provision.devices import ProvisionError, add, remove
from tests.conftest import SAMPLE_CONFIG

FILES = ("yukimizu.toml", "stations.csv", "meters.csv", "plows.csv", "routes.geojson", "zones.csv")


def test_removing_a_plow_of_a_work_zone_is_refused(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(SAMPLE_CONFIG.parent / name, tmp_path / name)
    cfg = load_config(tmp_path / "yukimizu.toml", environ={})
    before = (tmp_path / "plows.csv").read_bytes()
    with pytest.raises(ProvisionError) as info:
        remove(cfg, "plow", "P03")
    text = str(info.value)
    assert text.startswith("device not removed:")
    assert "zones.csv line 3: column 'plows': 'P03' is not a plow" in text
    assert (tmp_path / "plows.csv").read_bytes() == before
    assert "P03" in load_registry(cfg).zones["Z2"].plows


def test_adding_checks_the_zones_too(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(SAMPLE_CONFIG.parent / name, tmp_path / name)
    # a zone naming a plow that is not there yet: the registry is broken until added
    with (tmp_path / "zones.csv").open("a", encoding="utf-8") as fh:
        fh.write("Z9,第9工区,町直営,P09\n")
    cfg = load_config(tmp_path / "yukimizu.toml", environ={})
    with pytest.raises(ProvisionError) as info:
        add(cfg, "plow", "P06", {"name": "除雪6号車", "contractor": "町直営"})
    assert "zones.csv line 5: column 'plows': 'P09' is not a plow" in str(info.value)
