"""Fixtures of the dataset tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key variables from the machine running the tests (the provider tests use it)."""
    for name in ("OPENAI_API_KEY", "OLLAMA_API_KEY", "FTF_PROVIDER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
