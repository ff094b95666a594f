"""The README documents exactly the derived series rules/schema.py defines, and the
transition record's JSON schema is what alerts are told to expect."""

from __future__ import annotations

from rules.schema import DERIVED, markdown_table
from rules.transitions import JSON_SCHEMA
from tests.conftest import REPO

BEGIN, END = "<!-- derived-series:begin -->", "<!-- derived-series:end -->"


def test_readme_table_of_derived_series_matches_the_schema() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert BEGIN in readme and END in readme, "README lost its derived-series markers"
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == markdown_table(), (
        "README's derived-series table is out of date; paste rules.schema.markdown_table()"
    )


def test_every_derived_measurement_has_tags_fields_and_a_meaning() -> None:
    for m, (tags, fields, meaning) in DERIVED.items():
        assert fields and meaning, m
        assert not set(tags) & set(fields), f"{m}: a name is both tag and field"


def test_transition_schema_names_the_contract_fields() -> None:
    required = set(JSON_SCHEMA["required"])
    assert {"key", "rule", "subject", "severity", "status", "event_time", "message"} <= required
