"""One tiny trained LoRA run shared by the export tests (they read it, never change it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train.helpers import chat_dataset  # tests/ is on sys.path (tests/conftest.py)


@pytest.fixture(scope="session")
def trained_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA run trained for 2 steps at a high learning rate (its B matrices clearly non-zero)."""
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.step import train

    root = tmp_path_factory.mktemp("export-run")
    cfg = TrainConfig(
        base_model=str(tiny_model), max_len=64, max_steps=2, precision="fp32", threads=1, learning_rate=1e-2
    )
    train(chat_dataset(root / "ds"), root / "run", cfg)
    return root / "run"
