"""A memory over the hashing embedder (no model), in each test's own state folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from finetuneflow.api.memory import close_memories
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.memory.store import Memory

HASH = "hash:256"
FACTS = [
    "The warranty lasts two years from the date of purchase.",
    "Error E21 means the water tank is empty.",
    "The office is closed on Sundays and public holidays.",
]


@pytest.fixture(autouse=True)
def fresh_api() -> Iterator[None]:
    """Memories the API opened in one test are not seen by the next (each has its own FTF_HOME)."""
    close_memories()
    yield
    close_memories()


@pytest.fixture
def open_memory() -> Callable[..., Memory]:
    """``open_memory(**config)``: a fresh :class:`Memory` of project ``p`` (hashing embedder)."""

    def make(**config: object) -> Memory:
        return Memory("p", MemoryConfig(**{"embedder": HASH, **config}))  # type: ignore[arg-type]

    return make
