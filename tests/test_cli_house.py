"""The command line as a person uses it: pipes, reasons, ``init``; SQLite set-up once."""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cli import COMMANDS, build_parser
from cli.init import FILES
from core.config import Config
from core.sqlite import Column, Schema, StoreError, open_db
from ingest.deadletter import Content, DeadLetterStore, Letter
from ingest.reasons import Drop, Reason
from rules.config import RulesConfig
from tests.conftest import REPO

CLI = [sys.executable, "-m", "cli"]


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- core/sqlite.py -------------------------------------------------------------------


def test_open_db_sets_wal_and_full_sync_and_adds_a_column_once(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    v1 = Schema(("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, a TEXT NOT NULL)",))
    db = open_db(path, v1)
    db.execute("INSERT INTO t (a) VALUES ('old'), ('keep')")
    db.close()
    v2 = Schema(
        v1.statements,
        (
            Column(
                "t",
                "b",
                "TEXT NOT NULL DEFAULT 'new'",
                "UPDATE t SET b = 'was-old' WHERE a = 'old'",
            ),
        ),
    )
    db = open_db(path, v2)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    rows = db.execute("SELECT a, b FROM t ORDER BY id").fetchall()
    assert rows == [("old", "was-old"), ("keep", "new")]
    db.execute("UPDATE t SET b = 'edited' WHERE a = 'old'")
    db.close()
    db = open_db(path, v2)  # the column is there now: no second ALTER, no backfill
    assert db.execute("SELECT b FROM t ORDER BY id").fetchall() == [("edited",), ("new",)]
    db.close()


def test_open_db_names_the_file_it_cannot_use(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=r"not-a-db\.sqlite"):
        open_db(bad, Schema(("CREATE TABLE IF NOT EXISTS t (id INTEGER)",)))


def test_dead_letter_store_from_before_the_content_column_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "deadletter.sqlite"
    db = sqlite3.connect(path)  # the schema as the previous version created it
    db.execute(
        "CREATE TABLE deadletters (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
        " topic TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, payload BLOB NOT NULL)"
    )
    rows = [
        ("y/water/M001", "influx_rejected", b'{"register_l": 1.0}'),  # first-write path
        ("y/water/M001", "influx_rejected", b"water_meter,device=M001 register_l=1.0 1"),  # spool
        ("y/snow/ST01", "invalid_json", b"snow_depth,oops"),  # a device sent that
    ]
    db.executemany(
        "INSERT INTO deadletters (time, topic, reason, detail, payload) VALUES (1, ?, ?, '', ?)",
        rows,
    )
    db.commit()
    db.close()
    store = DeadLetterStore(path)
    try:
        assert [d.content for d in store.list()] == [
            Content.PAYLOAD,
            Content.LINE_PROTOCOL,
            Content.PAYLOAD,
        ]
        store.add_many([Letter("t", Reason.EMPTY, "", b"")])
        assert store.list()[-1].content == Content.PAYLOAD
        with pytest.raises(ValueError, match="not_a_reason"):
            store.add_many([Letter("t", "not_a_reason", "", b"")])  # type: ignore[arg-type]
    finally:
        store.close()


# --- reasons --------------------------------------------------------------------------


def test_readme_reason_table_matches_the_enumeration() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Dead letters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \| ([^|]+) \|$", section, flags=re.M)
    assert [r[0] for r in rows] == [r.value for r in Reason], "README reasons ≠ Reason"
    assert all(meaning.strip() and todo.strip() for _, meaning, todo in rows)
    dropped = section.split("Dropped, not dead-lettered", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", dropped)) - {"dropped"} == {d.value for d in Drop}


def test_unknown_reason_is_refused_with_the_valid_ones_listed(tmp_path: Path) -> None:
    out = run(["deadletter", "list", "--reason", "unknown_devices"])
    assert out.returncode == 2
    assert "unknown reason 'unknown_devices'" in out.stderr
    for reason in Reason:
        assert reason.value in out.stderr
    args = build_parser().parse_args(["deadletter", "purge", "--reason", "unknown_device"])
    assert args.reason is Reason.UNKNOWN_DEVICE


# --- pipes ----------------------------------------------------------------------------


def test_listing_into_a_pipe_that_closes_early_exits_quietly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = DeadLetterStore(state / "deadletter.sqlite")
    store.add_many(
        [Letter(f"y/snow/S{i}", Reason.UNKNOWN_DEVICE, "x" * 80, b"{}") for i in range(20_000)]
    )
    store.close()
    env = {**os.environ, "YUKIMIZU_INGEST__STATE_DIR": f'"{state}"'}
    lister = subprocess.Popen(
        [*CLI, "deadletter", "list", "--limit", "20000"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert lister.stdout is not None and lister.stderr is not None
    head = lister.stdout.readline()  # like `| head -1`: read a little, then close
    lister.stdout.close()
    err = lister.stderr.read().decode()
    rc = lister.wait(60)
    assert head.startswith(b"dead letters by reason: unknown_device=20000")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == ""
    assert rc == 141


# --- init -----------------------------------------------------------------------------


def test_init_writes_a_site_that_passes_config_check_and_refuses_to_overwrite(
    tmp_path: Path,
) -> None:
    site = tmp_path / "etc" / "yukimizu"
    made = run(["init", str(site)])
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in site.iterdir()) == sorted(FILES)
    assert "next steps" in made.stdout and "config check" in made.stdout
    # From another directory, so relative paths must resolve against the file.
    check = subprocess.run(
        [*CLI, "-c", str(site / "yukimizu.toml"), "config", "check"],
        env={k: v for k, v in os.environ.items() if not k.startswith("YUKIMIZU_")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "configuration OK: 1 stations, 1 meters, 1 plows, 1 route segments" in check.stdout

    (site / "stations.csv").write_text("id\nedited\n", encoding="utf-8")
    again = run(["init", str(site)])
    assert again.returncode == 1 and "--force" in again.stderr
    assert (site / "stations.csv").read_text(encoding="utf-8") == "id\nedited\n"
    forced = run(["init", str(site), "--force"])
    assert forced.returncode == 0
    assert (site / "stations.csv").read_text(encoding="utf-8").startswith("id,name,district")


def _documented_keys(path: Path) -> dict[str, set[str]]:
    """section → keys the file sets or shows commented out (``# key = …``)."""
    keys: dict[str, set[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.lstrip("# ").rstrip()
        if m := re.fullmatch(r"\[(\w+)\].*", line.split("#")[0].strip()):
            section = m.group(1)
        elif m := re.match(r"(\w+) = ", line):
            keys.setdefault(section, set()).add(m.group(1))
    return keys


def test_init_template_documents_every_config_key() -> None:
    template = REPO / "cli" / "templates" / "yukimizu.toml"
    tomllib.loads(template.read_text(encoding="utf-8"))
    documented = _documented_keys(template)
    # Sections validated by their own package (a dict in Config) and their models.
    feature_models = {"rules": RulesConfig}
    for section, field in Config.model_fields.items():
        if section == "base_dir":
            continue  # set by load_config, not written in files
        model: Any = feature_models.get(section, field.annotation)
        if not hasattr(model, "model_fields"):
            continue  # a feature section whose package has no template entry yet
        scalar = {
            k for k, f in model.model_fields.items() if not hasattr(f.annotation, "model_fields")
        } - {"overrides", "away"}
        missing = scalar - documented.get(section, set())
        assert not missing, f"[{section}] keys missing from the init template: {missing}"


def test_every_command_word_is_registered_by_its_module() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    assert set(sub.choices) == set(COMMANDS)
    for word, module in COMMANDS.items():
        only = build_parser([word])
        chosen = next(a for a in only._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        assert word in chosen.choices, (word, module)


def test_ingest_does_not_load_the_other_packages_heavy_libraries() -> None:
    code = (
        "import sys; from cli import build_parser; build_parser(['-c', 'x.toml', 'ingest']);"
        "print(sorted(m for m in ('pandas', 'shapely', 'openpyxl') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
