"""Progress events: how a long step tells its caller what it is doing.

Every step takes an optional ``on_event`` callback. The CLI renders events as Rich progress bars,
the job runner stores them in the ``jobs`` table, and the web app (later) streams them as SSE.
A step never prints; it emits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Something happened in ``step``: progress ``done``/``total`` of ``stage``, or a message.

    ``metrics`` carries numbers worth plotting or logging (loss, tokens/s, ...).
    """

    step: str
    stage: str
    done: float = 0
    total: float | None = None
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: steps called from plain Python stay quiet."""


class Emitter:
    """Small helper bound to one step name, so step code reads ``emit("stage", done, total)``."""

    def __init__(self, step: str, sink: EventSink | None) -> None:
        self.step = step
        self.sink = sink or ignore

    def __call__(
        self,
        stage: str,
        done: float = 0,
        total: float | None = None,
        message: str = "",
        **metrics: Any,
    ) -> None:
        self.sink(Event(self.step, stage, done, total, message, metrics))
