"""The scheduler admits what waits into the running batch, keeps models apart, and reports each
answer's pieces so that they join into its final text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from finetuneflow.api.scheduler import Answer, Job, Scheduler, Visible
from finetuneflow.models.batching import Row


class Tok:
    """Token i decodes as chr(ord('a') + i % 26)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_visible_pieces_join_into_the_final_text_cut_at_a_stop() -> None:
    visible = Visible(Tok(), ["def"])
    pieces = [visible.update(list(range(n)), final=False) for n in range(1, 7)]
    assert visible.stopped and "".join(pieces) == "abc" == visible.text


class Models:
    """Served 'models' whose activation waits on ``gate`` (so jobs pile up) and is recorded."""

    def __init__(self, model: Any) -> None:
        self.model, self.tokenizer, self.pad_id = model, Tok(), 0
        self.gate = threading.Event()
        self.activated: list[str] = []

    @contextmanager
    def activate(self, name: str) -> Iterator[Any]:
        self.gate.wait(30)
        self.activated.append(name)
        yield self.model


def test_waiting_jobs_join_one_batch_per_model(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from finetuneflow.models import batching
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())
    scheduler = Scheduler(models, batch_size=3)
    sizes: list[int] = []
    done: list[Answer | BaseException] = []
    finished = threading.Semaphore(0)
    real_admit = batching.DecodeBatch.admit

    def admit(self: Any, rows: Any) -> None:
        sizes.append(len(rows))
        real_admit(self, rows)

    monkeypatch.setattr(batching.DecodeBatch, "admit", admit)

    def job(name: str) -> Job:
        def end(result: Answer | BaseException) -> None:
            done.append(result)
            finished.release()

        return Job(name, Row([5, 6, 7], 4, frozenset()), Visible(Tok(), []), lambda _p: None, end)

    try:
        for name in ("a", "a", "b", "a", "a", "a", "a"):
            scheduler.submit(job(name))
        models.gate.set()
        for _ in range(7):
            assert finished.acquire(timeout=60)
    finally:
        scheduler.close()
    # a's first two run together; b waits for them (not starved by the a's behind it); then a's in 3s
    assert models.activated == ["a", "b", "a"]
    assert sizes[:2] == [2, 1] and sizes[2] == 3
    assert all(isinstance(d, Answer) and d.completion_tokens == 4 for d in done)


class Recorder:
    """A job's callbacks: its pieces, its end (an Answer or the error) and an event once it ends."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.result: Answer | BaseException | None = None
        self.ended = threading.Event()

    def job(self, row: Row, on_text: Any = None) -> Job:
        def done(result: Answer | BaseException) -> None:
            self.result = result
            self.ended.set()

        return Job("a", row, Visible(Tok(), []), on_text or self.pieces.append, done)

    def wait(self) -> Answer | BaseException:
        assert self.ended.wait(60), "the job never ended"
        assert self.result is not None
        return self.result


def unsampleable() -> Row:
    """A row whose first draw fails (torch's generators take no seed past 64 bits): the sampling
    checks upstream refuse it, so only a request that got past them could bring one here."""
    return Row([5, 6, 7], 4, frozenset(), temperature=1.0, seed=2**64)


def test_a_failed_admission_fails_that_request_alone_never_the_running_rows(tiny_model: Any) -> None:
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())
    models.gate.set()
    scheduler = Scheduler(models, batch_size=4)
    running, bad = Recorder(), Recorder()

    def on_text(piece: str) -> None:
        if not running.pieces:  # the first piece: the row is decoding, 23 tokens still to go
            scheduler.submit(bad.job(unsampleable()))
        running.pieces.append(piece)

    try:
        scheduler.submit(running.job(Row([5, 6, 7], 24, frozenset()), on_text))
        failed, answer = bad.wait(), running.wait()
    finally:
        scheduler.close()
    assert isinstance(failed, ValueError) and "Overflow" in str(failed)
    assert isinstance(answer, Answer) and answer.completion_tokens == 24  # untouched by the failure


def test_requests_admitted_together_fail_only_where_their_own_admission_fails(tiny_model: Any) -> None:
    """Admitted in one prefill with a failing row, a sampled row is retried alone and draws exactly
    what it draws alone (its seed's generator starts afresh)."""
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())
    scheduler = Scheduler(models, batch_size=4)

    def sampled() -> Row:
        return Row([5, 6, 7], 8, frozenset(), temperature=1.0, seed=7)

    together, bad, alone = Recorder(), Recorder(), Recorder()
    try:
        scheduler.submit(together.job(sampled()))  # drawn first in the shared prefill
        scheduler.submit(bad.job(unsampleable()))
        models.gate.set()
        failed, answer = bad.wait(), together.wait()
        scheduler.submit(alone.job(sampled()))
        reference = alone.wait()
    finally:
        scheduler.close()
    assert isinstance(failed, ValueError)
    assert isinstance(answer, Answer) and isinstance(reference, Answer)
    assert answer.text == reference.text and answer.completion_tokens == 8


def test_closing_ends_waiting_requests_with_server_closed_and_refuses_new_ones(tiny_model: Any) -> None:
    """ServerClosed is what the server answers 503 with its text (every other error: its type)."""
    from finetuneflow.api.scheduler import ServerClosed
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())  # the gate holds its activation
    scheduler = Scheduler(models, batch_size=4)
    first, second = Recorder(), Recorder()
    scheduler.submit(first.job(Row([5, 6, 7], 4, frozenset())))
    scheduler.submit(second.job(Row([5, 6, 7], 4, frozenset())))
    closing = threading.Thread(target=scheduler.close)
    closing.start()
    while not scheduler._closed:  # close() has begun before the activation is let through
        threading.Event().wait(0.01)
    models.gate.set()
    closing.join(60)
    for ended in (first.wait(), second.wait()):
        assert isinstance(ended, ServerClosed) and "shut down before this request ran" in str(ended)
    with pytest.raises(ServerClosed, match="shutting down"):
        scheduler.submit(Recorder().job(Row([5, 6, 7], 4, frozenset())))


def test_the_thread_outlives_a_failed_batch_and_serves_the_next_request(
    tiny_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises while a batch decodes (here a step, then switching the adapter) ends that
    batch's requests with the error; the requests after it are answered (they used to hang)."""
    from finetuneflow.models import batching
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())
    models.gate.set()
    scheduler = Scheduler(models, batch_size=4)
    real_step, real_activate = batching.DecodeBatch.step, models.activate
    failures = {"step": 1, "activate": 1}

    def step(self: Any) -> None:
        if failures["step"]:
            failures["step"] -= 1
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        real_step(self)

    @contextmanager
    def activate(name: str) -> Iterator[Any]:
        if failures["activate"] and name == "b":
            failures["activate"] -= 1
            raise RuntimeError("adapter 'b' could not be switched on")
        with real_activate(name) as model:
            yield model

    monkeypatch.setattr(batching.DecodeBatch, "step", step)
    monkeypatch.setattr(models, "activate", activate)
    stepped, switched, after = Recorder(), Recorder(), Recorder()
    try:
        scheduler.submit(stepped.job(Row([5, 6, 7], 4, frozenset())))
        first = stepped.wait()
        scheduler.submit(Job("b", Row([5, 6, 7], 4, frozenset()), Visible(Tok(), []), switched.pieces.append,
                             lambda r: (setattr(switched, "result", r), switched.ended.set())))  # fmt: skip
        second = switched.wait()
        scheduler.submit(after.job(Row([5, 6, 7], 4, frozenset())))
        third = after.wait()
    finally:
        scheduler.close()
    assert isinstance(first, RuntimeError) and "allocate memory" in str(first)
    assert isinstance(second, RuntimeError) and "could not be switched on" in str(second)
    assert isinstance(third, Answer) and third.completion_tokens == 4


def test_a_callback_that_raises_cancels_its_own_job_only(tiny_model: Any) -> None:
    """A client whose event loop is gone (its callback raises) stops its row; the others finish."""
    from finetuneflow.models.load import load_causal_lm

    models = Models(load_causal_lm(tiny_model).eval())
    scheduler = Scheduler(models, batch_size=4)
    gone, kept = Recorder(), Recorder()

    def closed_loop(_piece: str) -> None:
        raise RuntimeError("Event loop is closed")

    try:
        scheduler.submit(gone.job(Row([5, 6, 7], 24, frozenset()), closed_loop))
        scheduler.submit(kept.job(Row([5, 6, 7], 24, frozenset())))
        models.gate.set()
        answer = kept.wait()
    finally:
        scheduler.close()
    assert isinstance(answer, Answer) and answer.completion_tokens == 24
    assert gone.result is None  # cancelled: no end reported to a client that is not there
