"""Every ``docs/X.md#anchor`` the code, configs and docs cite exists (GitHub's slug rules)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

CITE = re.compile(r"docs/([a-z-]+\.md)#([a-z0-9-]+)")
SOURCES = ("*.py", "*.toml", "*.md", "*.sh", "*.yml", "*.conf")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {
        _slug(line.lstrip("#"))
        for line in doc.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def test_every_cited_anchor_exists() -> None:
    missing = []
    for pattern in SOURCES:
        for path in REPO.rglob(pattern):
            if any(part.startswith(".") for part in path.relative_to(REPO).parts):
                continue
            for doc, anchor in CITE.findall(path.read_text(encoding="utf-8", errors="replace")):
                target = REPO / "docs" / doc
                if not target.exists() or anchor not in _anchors(target):
                    missing.append(f"{path.relative_to(REPO)}: docs/{doc}#{anchor}")
    assert not missing, "dangling doc links:\n" + "\n".join(sorted(set(missing)))
