"""docs/ARCHITECTURE.md stays true to the tree: every module is listed, every listed path exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "finetuneflow"
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def table_paths() -> set[str]:
    """Backticked paths in the first column of the 'Where things live' table."""
    section = DOC.read_text().split("## Where things live", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {p for cell in cells for p in re.findall(r"`([^`]+)`", cell)}


def test_every_module_is_listed() -> None:
    listed = table_paths()
    modules = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "migrations" not in p.parts and p.name != "__init__.py" or p.parent == PACKAGE / "api"
    }
    modules = (modules - {"__init__.py"}) | {"state/migrations/"}  # the migrations as one folder
    missing = sorted(m for m in modules if m not in listed)
    assert not missing, f"add these modules to docs/ARCHITECTURE.md: {missing}"


def test_every_listed_path_exists() -> None:
    gone = sorted(p for p in table_paths() if not (PACKAGE / p).exists())
    assert not gone, f"docs/ARCHITECTURE.md lists paths that do not exist: {gone}"
