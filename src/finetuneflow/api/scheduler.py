"""The server's scheduler: one thread that decodes every request, continuously batched.

Requests queue in arrival order. The thread keeps one running :class:`DecodeBatch` for one served
model (the base, or one run's adapter switched on) and, between decode steps, admits queued requests
for that model while the batch has room. Requests for another model wait until the running batch
drains; so that they are not starved, the batch stops admitting once the oldest waiting request is
for another model. Callers never block on the thread: they get text pieces and the end through the
callbacks of their :class:`Job` (called from the scheduler's thread).

The thread outlives any failure: whatever raises while a batch decodes (switching adapters, a step,
trimming the caches, decoding text) ends that batch's requests with the error and the thread goes
on to the next; a callback that raises (its client's event loop gone) cancels its own job only.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from finetuneflow.models.batching import DecodeBatch, Row

log = logging.getLogger(__name__)


class ServerClosed(RuntimeError):
    """The server is shutting down: a request it will not answer (its text is safe to show)."""


@dataclass
class Answer:
    """A finished answer: its text (stop strings and surrounding whitespace removed), why it ended
    (``stop``: end of turn or a stop string; ``length``: max_tokens) and its token counts."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    sources: list[dict[str, Any]] = field(default_factory=list)  # the memories in the prompt


class Visible:
    """What of an answer may be shown so far: decoded, cut at the first stop string, stripped, and
    holding back a tail that could still become a stop string or an unfinished character. The
    pieces it hands out, joined, are exactly the final text."""

    def __init__(self, tokenizer: Any, stops: list[str], lock: Any = None) -> None:
        self.tokenizer = tokenizer
        self.lock = lock or threading.Lock()  # a fast tokenizer must not be used by two threads at once
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0  # characters of the stripped text handed out
        self.stopped = False

    def update(self, tokens: list[int], final: bool) -> str:
        """The new piece for the tokens so far (``final``: nothing more will come)."""
        with self.lock:
            text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            text, final, self.stopped = text[: min(cuts)], True, True
        elif not final:
            text = text[: max(0, len(text) - self.hold)].rstrip("\ufffd")  # a half-decoded character
        shown = text.strip()
        if final:
            self.text = shown
        piece = shown[self.sent :]
        self.sent = len(shown)
        return piece


@dataclass
class Job:
    """One request in the scheduler: its row, how its text is shown, and where it goes."""

    model: str  # the served model's name
    row: Row
    visible: Visible
    on_text: Callable[[str], None]  # each new piece of the answer
    on_done: Callable[[Answer | BaseException], None]  # once, at the end: the answer or the error
    sources: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False

    def send(self, piece: str) -> None:
        """Hand out ``piece``; a callback that raises (nobody left to take it) cancels the job."""
        try:
            self.on_text(piece)
        except Exception:
            log.debug("a text callback failed; its job is cancelled", exc_info=True)
            self.cancelled = True

    def finish(self, error: BaseException | None = None) -> None:
        """Report the end: ``error``, or the answer. Never raises: the scheduler's thread calls it."""
        if error is None:
            reason = "stop" if self.visible.stopped or self.row.finish == "stop" else "length"
            tokens = len(self.row.prompt_ids), len(self.row.tokens)
            result: Answer | BaseException = Answer(self.visible.text, reason, *tokens, self.sources)
        else:
            result = error
        try:
            self.on_done(result)
        except Exception:
            log.debug("a done callback failed", exc_info=True)


class Models(Protocol):
    """What the scheduler needs of the served models."""

    tokenizer: Any
    pad_id: int

    def activate(self, name: str) -> AbstractContextManager[Any]:
        """The model with ``name``'s adapter switched on (the base: all off), for a batch's life."""
        ...


class Scheduler:
    """The decoding thread (see the module docstring); ``batch_size`` rows at most decode together."""

    def __init__(self, models: Models, batch_size: int = 8) -> None:
        self.models = models
        self.batch_size = max(1, batch_size)
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ftf-serve-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; its callbacks report from the scheduler's thread."""
        with self._wake:
            if self._closed:
                raise ServerClosed("the server is shutting down")
            self._queue.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (the client went away) at the next step; it gets no further callbacks."""
        job.cancelled = True
        with self._wake:
            if job in self._queue:
                self._queue.remove(job)

    def close(self) -> None:
        """Stop the thread after the current step; queued jobs get an error."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        for job in list(self._queue):
            job.finish(ServerClosed("the server shut down before this request ran"))

    def _next_model(self) -> str | None:
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            return None if self._closed else self._queue[0].model

    def _loop(self) -> None:
        while (name := self._next_model()) is not None:
            jobs: dict[int, Job] = {}  # id(row) -> its job, for the running batch
            try:
                with self.models.activate(name) as model:
                    self._decode(name, DecodeBatch(model, self.models.pad_id), jobs)
            except Exception as err:  # the batch is lost, not the thread: later requests need it
                log.warning("decoding for %s failed (%s); its requests end with the error", name,
                            type(err).__name__)  # fmt: skip
                ended = list(jobs.values()) or self._admissible(name, len(self._queue))  # none admitted:
                jobs.clear()  # the failure is the model's (its activation), so those waiting for it end too
                for job in ended:
                    job.finish(err)
            finally:  # closed mid-answer: nobody is left waiting
                for job in jobs.values():
                    job.finish(ServerClosed("the server shut down during this request"))

    def _admissible(self, name: str, room: int) -> list[Job]:
        """Queued jobs for ``name`` that fit in ``room``, oldest first, none past a job for another model."""
        taken: list[Job] = []
        with self._wake:
            while self._queue and len(taken) < room and self._queue[0].model == name:
                taken.append(self._queue.popleft())
        return taken

    def _decode(self, name: str, batch: DecodeBatch, jobs: dict[int, Job]) -> None:
        """Decode for model ``name`` until no row is left and none waits for it (or the scheduler
        closes); ``jobs`` holds the running rows' jobs throughout."""
        while not self._closed:
            new = self._admissible(name, self.batch_size - len(batch))
            if new:
                self._admit(batch, new, jobs)
            elif len(batch):
                batch.step()  # if it raises, the rows in it fail (see _loop), not the server
            else:
                return
            self._report(batch, jobs)

    def _admit(self, batch: DecodeBatch, new: list[Job], jobs: dict[int, Job]) -> None:
        """Add ``new`` to the running batch. A failed admission changes nothing in the batch
        (``DecodeBatch.admit`` is all or nothing), so it fails only the jobs it admitted, never the
        rows already decoding: those are other clients' answers. Jobs that failed together are tried
        one by one, so that one request's bad settings fail that request alone."""
        try:
            batch.admit([j.row for j in new])
        except Exception as err:
            if len(new) == 1:
                if not new[0].cancelled:
                    new[0].finish(err)
                return
            for job in new:
                self._admit(batch, [job], jobs)
            return
        jobs.update((id(j.row), j) for j in new)

    def _report(self, batch: DecodeBatch, jobs: dict[int, Job]) -> None:
        """Hand out each row's new text; end the rows that stopped, finished or were cancelled."""
        for row in batch.rows:
            job = jobs[id(row)]
            if job.cancelled:
                row.finish = "cancelled"
                continue
            piece = job.visible.update(row.tokens, final=row.finish is not None)
            if job.visible.stopped and row.finish is None:
                row.finish = "stop"
            if piece:
                job.send(piece)
        for row in batch.drop_finished():
            job = jobs.pop(id(row))
            if not job.cancelled:
                job.finish()
