"""The import graph between top-level packages points down only (docs/architecture.md#layers).

An AST scan, so imports inside functions and ``TYPE_CHECKING`` blocks count too: a
cycle hidden in a function body is still a cycle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Layer of every top-level package; a package may import packages of a lower layer,
# and never a sibling of its own layer (features talk through InfluxDB or a documented
# record module, listed in CONTRACTS).
LAYERS: dict[str, int] = {
    "sensors": 0,
    "core": 1,
    "ingest": 2,
    "simulators": 2,
    "rules": 2,
    "alerts": 2,
    "dashboards": 2,
    "publicpage": 2,
    "reports": 2,
    "provision": 2,
    "devtools": 3,
    "cli": 4,
}
# Feature → the one module of another feature it may read (a documented contract).
CONTRACTS: dict[str, set[str]] = {
    "alerts": {"rules.transitions"},
    "dashboards": {"rules.schema"},
    "publicpage": {"rules.schema"},
    "reports": {"rules.schema"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _edges() -> dict[str, set[str]]:
    """Top-level package → the modules of other packages of ours it imports."""
    edges: dict[str, set[str]] = {}
    for pkg in LAYERS:
        root = REPO / pkg
        if not root.is_dir():
            continue
        found: set[str] = set()
        for path in root.rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in LAYERS and top != pkg:
                    found.add(name)
        edges[pkg] = found
    return edges


def test_every_package_imports_downward_only() -> None:
    bad = []
    for pkg, targets in _edges().items():
        for name in sorted(targets):
            top = name.split(".")[0]
            allowed = LAYERS[top] < LAYERS[pkg] or any(
                name == c or name.startswith(c + ".") for c in CONTRACTS.get(pkg, ())
            )
            if not allowed:
                bad.append(f"{pkg} (layer {LAYERS[pkg]}) imports {name} (layer {LAYERS[top]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_sensors_imports_nothing_of_ours() -> None:
    assert _edges()["sensors"] == set()


def test_every_top_level_package_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages - {"tests", "benchmarks"} <= set(LAYERS), (
        f"give {sorted(packages - set(LAYERS) - {'tests', 'benchmarks'})} a layer in LAYERS"
    )


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from ingest.cli import main\n", encoding="utf-8")
    assert "ingest.cli" in _imports(bad)
