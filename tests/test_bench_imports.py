"""The bench scripts are run by hand, not by the suite: a rename in the package must not leave one
importing a name that is gone (bench/generate.py imported ``generate.Session`` for months after it
became ``AnswerCache``). Each ``from finetuneflow... import`` in them is resolved here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _package_imports(script: Path) -> list[tuple[str, str]]:
    tree = ast.parse(script.read_text(), str(script))
    return [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finetuneflow")
        for alias in node.names
    ]


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_a_bench_script_imports_only_names_the_package_has(script: Path) -> None:
    missing = []
    for module, name in _package_imports(script):
        found = importlib.import_module(module)
        if not hasattr(found, name):
            try:  # a submodule imported by name: from finetuneflow.ingest import stream
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"from {module} import {name}")
    assert not missing, f"{script.name}: {missing}"
