"""Shared fixtures: an isolated state folder for every test, a tiny model built once per session and the
real default model converted once per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"


@pytest.fixture(autouse=True)
def ftf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own FTF_HOME, so no test sees another's state or the user's (nor, in its
    trainings, the user's other trainings running on this machine: train/peers.py)."""
    home = tmp_path / "ftf_home"
    monkeypatch.setenv("FTF_HOME", str(home))
    monkeypatch.setenv("FTF_TRAINERS_DIR", str(tmp_path / "ftf_trainers"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FTF_DATABASE_URL", raising=False)
    yield home


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (hidden 64) with a ChatML BPE tokenizer, as a local HF folder."""
    from tiny import build_model

    return build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture(scope="session")
def tiny_tuned_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny model trained 8 steps on ``tests/train/helpers.chat_dataset``: enough
    that greedy answers are words ("Fault ..."), not the random model's empty turns. Read-only."""
    from train.helpers import tiny_run

    return tiny_run(tmp_path_factory.mktemp("tuned"), tiny_model, steps=8)


@pytest.fixture(scope="session")
def default_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model (SmolLM2-135M-Instruct's GGUF, dequantized to safetensors) converted once per
    session into a state folder of its own, outside every test's FTF_HOME. Use ``default_model``."""
    from finetuneflow.models.resolve import DEFAULT_MODEL, resolve_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTF_HOME", str(tmp_path_factory.mktemp("default-model-home")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return resolve_model(DEFAULT_MODEL)


@pytest.fixture
def default_model(default_model_cache: Path, ftf_home: Path) -> Iterator[Path]:
    """The converted default model as ``$FTF_HOME/models/<name>`` of this test: a link to the session's
    folder, so ``resolve_model`` finds it converted. Only the link is the test's: the folder is shared,
    so a test that writes into it (or deletes from it) fails at teardown instead of changing others."""
    link = ftf_home / "models" / default_model_cache.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(default_model_cache, target_is_directory=True)
    before = _files(default_model_cache)
    yield link
    assert _files(default_model_cache) == before, f"the test changed the shared {default_model_cache}"


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime in ns) of every file under ``folder``: any write changes it."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
