"""Imports point inward (engine <- bus <- leader/api/consumers <- cli) and the engine stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "matchbox"

# what each layer may import from matchbox (besides itself)
ALLOWED = {
    "engine": set(),
    "bus": {"engine"},
    "leader": {"engine", "bus"},
    "api": {"engine", "bus", "settings", "consumers"},  # consumers.queries: candles and stats
    "consumers": {"engine", "bus", "settings", "metrics"},  # process.py: the consume and replay processes
    "web": set(),
    "client": {"api"},  # the API's response models and codes only: see test_the_client_imports_only_the_contract
    "bench": {"engine", "bus", "leader", "consumers", "api", "loadgen"},  # latency: the API's model; loadgen's flow
    "chaos": {"engine", "bus", "leader", "consumers", "api", "up", "logs", "settings"},  # runs the whole exchange
}
IMPURE = {"asyncio", "redis", "valkey", "socket", "time", "random", "os", "threading", "datetime", "sqlalchemy"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_files() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in ALLOWED for path in sorted((PACKAGE / layer).rglob("*.py"))]


@pytest.mark.parametrize(("layer", "path"), layer_files(), ids=str)
def test_imports_point_inward(layer: str, path: Path) -> None:
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] != "matchbox" or len(parts) < 2 or parts[1] == layer:
            continue
        assert parts[1] in ALLOWED[layer], f"{path.name}: {layer} must not import {name}"


def test_the_client_imports_only_the_contract() -> None:
    """matchbox.client speaks the API's models (the OpenAPI document's), never its server."""
    for path in sorted((PACKAGE / "client").rglob("*.py")):
        for name in imports_of(path):
            if name.startswith("matchbox.api"):
                assert name in ("matchbox.api.models", "matchbox.api.codes"), f"{path.name} imports {name}"


def test_engine_does_no_io_and_reads_no_clock() -> None:
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        bad = {name for name in imports_of(path) if name.split(".")[0] in IMPURE}
        assert not bad, f"{path.name} imports {bad}"


def test_the_walker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import time\nfrom matchbox.api import app\n")
    assert imports_of(module) == {"time", "matchbox.api"}
