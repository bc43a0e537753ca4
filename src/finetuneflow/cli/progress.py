"""Render step events in the terminal: a Rich progress bar per stage, messages as log lines."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from finetuneflow.events import Event


class RichProgress:
    """Context manager and event sink: ``with RichProgress() as sink: api.train(..., on_event=sink)``."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if event.total is None:
            if event.message:
                self.progress.console.log(f"[{event.step}] {event.message}")
            return
        key = (event.step, event.stage)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(
                f"{event.step}: {event.stage}", total=event.total, info=""
            )
        self.progress.update(self.tasks[key], completed=event.done, total=event.total, info=_info(event))


def _info(event: Event) -> str:
    m: dict[str, Any] = event.metrics
    parts = []
    if m.get("loss") is not None:
        parts.append(f"loss {m['loss']:.3f}")
    if m.get("eval_loss") is not None:
        parts.append(f"eval {m['eval_loss']:.3f}")
    if m.get("tokens_per_s"):
        parts.append(f"{m['tokens_per_s']:.0f} tok/s")
    if not parts and event.message:
        parts.append(event.message[:40])
    return "  ".join(parts)
