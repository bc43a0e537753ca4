"""The seam between chat and the memory: the default port calls ``finetuneflow.api``'s memory
functions with the project first, and says "not installed" in a build without them."""

from __future__ import annotations

from typing import Any

import pytest

from finetuneflow import api
from finetuneflow.api.memory_port import (
    API_FUNCTIONS,
    NOT_INSTALLED,
    SWITCHED_OFF,
    ApiMemory,
    MemoryUnavailable,
    NoMemory,
    memory_port,
)


def test_without_the_memory_functions_every_call_says_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in API_FUNCTIONS.values():
        monkeypatch.delattr(api, name, raising=False)
    port = memory_port("p")
    assert port == NoMemory(NOT_INSTALLED)
    with pytest.raises(MemoryUnavailable, match=NOT_INSTALLED):
        port.teach("x")
    with pytest.raises(MemoryUnavailable, match=NOT_INSTALLED):
        ApiMemory("p").recall("x")  # the same when a port is made by hand
    assert memory_port("p", enabled=False) == NoMemory(SWITCHED_OFF)


def test_with_them_each_call_goes_to_its_api_function(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name in API_FUNCTIONS.values():

        def record(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, args, kwargs))
            return [] if _name == "recall" else {"id": 1}

        monkeypatch.setattr(api, name, record, raising=False)
    port = memory_port("p")
    assert port == ApiMemory("p")
    port.recall("q", k=3)
    port.teach("fact", importance=0.8, tags=("t",), source="s")
    port.correct("12", "new")
    port.correct("the warranty", "new")
    port.forget("12")
    port.status()
    port.remember_exchange("q", "a", [1, 2], rating=5)
    assert calls == [
        ("recall", ("p", "q"), {"k": 3}),
        ("teach", ("p", "fact"), {"importance": 0.8, "tags": ("t",), "source": "s"}),
        ("correct", ("p", 12, "new"), {}),  # an id as typed becomes a number
        ("correct", ("p", "the warranty", "new"), {}),  # a query stays text
        ("forget", ("p", 12), {}),
        ("memory_status", ("p",), {}),
        ("remember_exchange", ("p", "q", "a", [1, 2]), {"rating": 5}),
    ]
