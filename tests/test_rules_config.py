"""A bad ``[rules]`` stops start-up with a message naming the field; overrides apply
most-specific-first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, ConfigError
from rules.config import load_rules_config, with_settings
from tests.conftest import REPO, SAMPLE_CONFIG


def _load(rules: dict[str, Any]) -> None:
    load_rules_config(Config.model_validate({"rules": rules}))


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"interval_s": 1}, "rules.interval_s: Input should be greater than or equal to 5"),
        ({"intervall_s": 60}, "rules.intervall_s: unknown key (typo?)"),
        ({"snow": {"dispatch_cm": "ten"}}, "rules.snow.dispatch_cm: Input should be a valid"),
        ({"water": {"night_min_lph": -1}}, "rules.water.night_min_lph: Input should be greater"),
        (
            {"overrides": {"meter": {"M003": {"water": {"night_min_lph": -2}}}}},
            "rules.overrides.meter.M003.water.night_min_lph: Input should be greater",
        ),
        (
            {"overrides": {"station": {"ST02": {"snwo": {"dispatch_cm": 5}}}}},
            "rules.overrides.station.ST02.snwo: unknown rule family",
        ),
        (
            {"overrides": {"route": {"R001": {"plow": {"cover_radius_m": 15, "x": 1}}}}},
            "rules.overrides.route.R001.plow.x: unknown key (typo?)",
        ),
        ({"overrides": {"house": {}}}, "rules.overrides.house"),
        (
            {"away": {"M003": [["tuesday", "2026-02-14T18:00:00+09:00"]]}},
            "rules.away.M003.0.0: Value error, 'tuesday' is not a date-time",
        ),
        (
            {"away": {"M003": [["2026-02-14T18:00:00+09:00", "2026-02-10T09:00:00+09:00"]]}},
            "rules.away: Value error, M003[0]: the start 2026-02-14T18:00:00+09:00 is not "
            "before the end",
        ),
        ({"away": {"M003": [["2026-02-10T09:00:00+09:00"]]}}, "rules.away.M003.0"),
    ],
)
def test_bad_rules_config_names_the_field(rules: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(rules)
    assert expected in str(exc.value)


def test_overrides_apply_district_then_subject() -> None:
    cfg = Config.model_validate(
        {
            "rules": {
                "water": {"night_min_lph": 5.0},
                "overrides": {
                    "district": {"中町": {"water": {"night_min_lph": 8.0, "stuck_days": 5}}},
                    "meter": {"M002": {"water": {"night_min_lph": 12.0}}},
                },
            }
        }
    )
    rc = load_rules_config(cfg)
    own = rc.for_subject("water", "meter", "M002", "中町")
    neighbour = rc.for_subject("water", "meter", "M009", "中町")
    elsewhere = rc.for_subject("water", "meter", "M001", "本町")
    assert (own.night_min_lph, own.stuck_days) == (12.0, 5)
    assert (neighbour.night_min_lph, neighbour.stuck_days) == (8.0, 5)
    assert (elsewhere.night_min_lph, elsewhere.stuck_days) == (5.0, 3)


def test_set_on_the_command_line_is_validated_too() -> None:
    cfg = Config.model_validate({})
    assert with_settings(cfg, ["snow.dispatch_cm=12"]).snow.dispatch_cm == 12
    with pytest.raises(ConfigError, match=r"rules\.snow\.dispatch_cm"):
        with_settings(cfg, ["snow.dispatch_cm=-3"])


def test_rules_check_with_a_bad_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text(
        SAMPLE_CONFIG.read_text(encoding="utf-8") + "\n[rules.snow]\ndispatch_cm = 0\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "cli", "-c", str(bad), "rules", "check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "rules.snow.dispatch_cm" in out.stderr and "Traceback" not in out.stderr


def test_away_times_without_an_offset_are_jst_whatever_the_host(tmp_path: Path) -> None:
    """The engine reads the periods as instants: a naive time is JST even on a UTC host
    (a subprocess with TZ=UTC, as the server runs); TOML date-times work as well."""
    cfg = tmp_path / "yukimizu.toml"
    cfg.write_text(
        "[rules.away]\n"
        'M003 = [["2026-02-10T09:00:00", "2026-02-14T18:00"]]\n'
        "M004 = [[2026-02-10T09:00:00+09:00, 2026-02-10T10:00:00]]\n",
        encoding="utf-8",
    )
    code = (
        "import sys; from pathlib import Path; from core.config import load_config; "
        "from rules.config import load_rules_config; "
        "rc = load_rules_config(load_config(Path(sys.argv[1]), environ={})); "
        "print([[int(t.timestamp()) for t in span] for m in sorted(rc.away) "
        "for span in rc.away[m]])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    # 2026-02-10T09:00+09:00 = 1770681600; 2026-02-14T18:00+09:00 = 1771059600
    assert out.stdout.strip() == "[[1770681600, 1771059600], [1770681600, 1770685200]]"
