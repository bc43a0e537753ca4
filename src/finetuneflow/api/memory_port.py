"""The one seam between chat and the memory: :class:`MemoryPort`.

Chat never imports the memory package. It talks to a port bound to one project, whose default,
:class:`ApiMemory`, calls the memory functions of :mod:`finetuneflow.api` (``recall``, ``teach``,
``correct``, ``forget``, ``memory_status``, ``remember_exchange``) and, in a build without them,
says so for each memory command instead of failing at import. Tests pass a fake port.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

NOT_INSTALLED = "memory is not installed in this build"
SWITCHED_OFF = "memory is off for this chat (start it without --no-memory)"


class MemoryUnavailable(RuntimeError):
    """The chat has no memory: switched off, or not installed (the message says which)."""


class MemoryPort(Protocol):
    """What chat asks of the memory of one project. Item ids are what ``recall`` returns."""

    def recall(self, query: str, k: int | None = None) -> list[dict[str, Any]]:
        """Items for ``query``, best first: ``id``, ``text``, ``kind``, ``importance``, ``score``
        (and its parts), ``source``."""
        ...

    def teach(
        self, text: str, importance: float | None = None, tags: Sequence[str] = (), source: str | None = None
    ) -> dict[str, Any]:
        """Store a fact; returns the new item."""
        ...

    def correct(self, target: str, new_text: str) -> dict[str, Any]:
        """Correct the item ``target`` (an id, or a query naming it); the correction outranks it.
        Raises LookupError when nothing matches."""
        ...

    def forget(self, item_id: str) -> Any:
        """Forget one item (soft). Raises LookupError for an unknown id."""
        ...

    def status(self) -> dict[str, Any]:
        """Counts by kind, sizes, embedder, index health."""
        ...

    def remember_exchange(
        self, question: str, answer: str, retrieved_ids: Sequence[Any], rating: int | None = None
    ) -> dict[str, Any]:
        """Store a question and its answer as an interaction item; returns it."""
        ...


# MemoryPort method -> the finetuneflow.api function it calls (with the project first)
API_FUNCTIONS = {
    "recall": "recall",
    "teach": "teach",
    "correct": "correct",
    "forget": "forget",
    "status": "memory_status",
    "remember_exchange": "remember_exchange",
}


def installed() -> bool:
    """Whether this build's API has every memory function chat uses."""
    api = importlib.import_module("finetuneflow.api")  # at call time: the api package imports chat
    return all(hasattr(api, name) for name in API_FUNCTIONS.values())


def item_id(text: str) -> int | str:
    """An item id as typed (``/forget 12``): a number when it is one."""
    return int(text) if text.isdigit() else text


@dataclass
class ApiMemory:
    """:class:`MemoryPort` over :mod:`finetuneflow.api`'s memory functions, for ``project``."""

    project: str

    def _call(self, method: str) -> Callable[..., Any]:
        api = importlib.import_module("finetuneflow.api")
        fn = getattr(api, API_FUNCTIONS[method], None)
        if fn is None:
            raise MemoryUnavailable(NOT_INSTALLED)
        return fn  # type: ignore[no-any-return]

    def recall(self, query: str, k: int | None = None) -> list[dict[str, Any]]:
        return list(self._call("recall")(self.project, query, k=k))

    def teach(
        self, text: str, importance: float | None = None, tags: Sequence[str] = (), source: str | None = None
    ) -> dict[str, Any]:
        return dict(self._call("teach")(self.project, text, importance=importance, tags=tags, source=source))

    def correct(self, target: str, new_text: str) -> dict[str, Any]:
        return dict(self._call("correct")(self.project, item_id(target), new_text))

    def forget(self, item: str) -> Any:
        return self._call("forget")(self.project, item_id(item))

    def status(self) -> dict[str, Any]:
        return dict(self._call("status")(self.project))

    def remember_exchange(
        self, question: str, answer: str, retrieved_ids: Sequence[Any], rating: int | None = None
    ) -> dict[str, Any]:
        fn = self._call("remember_exchange")
        return dict(fn(self.project, question, answer, list(retrieved_ids), rating=rating))


@dataclass
class NoMemory:
    """A :class:`MemoryPort` for a chat without memory: every call says why (``reason``)."""

    reason: str

    def _no(self) -> MemoryUnavailable:
        return MemoryUnavailable(self.reason)

    def recall(self, query: str, k: int | None = None) -> list[dict[str, Any]]:
        raise self._no()

    def teach(
        self, text: str, importance: float | None = None, tags: Sequence[str] = (), source: str | None = None
    ) -> dict[str, Any]:
        raise self._no()

    def correct(self, target: str, new_text: str) -> dict[str, Any]:
        raise self._no()

    def forget(self, item_id: str) -> Any:
        raise self._no()

    def status(self) -> dict[str, Any]:
        raise self._no()

    def remember_exchange(
        self, question: str, answer: str, retrieved_ids: Sequence[Any], rating: int | None = None
    ) -> dict[str, Any]:
        raise self._no()


def memory_port(project: str, enabled: bool = True) -> MemoryPort:
    """The memory of ``project`` for a chat: the API's when enabled and installed, else a
    :class:`NoMemory` that says which."""
    if not enabled:
        return NoMemory(SWITCHED_OFF)
    return ApiMemory(project) if installed() else NoMemory(NOT_INSTALLED)
