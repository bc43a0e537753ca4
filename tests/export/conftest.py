"""One tiny trained LoRA run shared by the export tests (they read it, never change it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train.helpers import tiny_run  # tests/ is on sys.path (tests/conftest.py)


@pytest.fixture(scope="session")
def trained_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA run trained for 2 steps at a high learning rate (its B matrices clearly non-zero)."""
    return tiny_run(tmp_path_factory.mktemp("export-run"), tiny_model, steps=2)
