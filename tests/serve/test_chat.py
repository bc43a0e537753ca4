"""Chat completions over real HTTP with the official openai client: the same answers as
``generate_reply``, whole and streamed; stop strings, max_tokens, seeds, adapters by model name."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from finetuneflow.api.scheduler import Job
from finetuneflow.api.serving import ChatRequest
from serve.conftest import RUN, Live

QUESTION = [{"role": "user", "content": "What is E3?"}]


def reference(live: Live, model: str, messages: list[dict[str, str]], max_tokens: int = 24) -> str:
    """Greedy ``generate_reply`` of the served model ``model`` (its adapter on)."""
    from finetuneflow.models.generate import generate_reply

    served = live.server.served
    with served.activate(model) as m:
        return generate_reply(m, served.tokenizer, messages, max_tokens)


def ask(live: Live, model: str = RUN, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"messages": QUESTION, "max_tokens": 24, "temperature": 0} | kwargs
    return live.client.chat.completions.create(model=model, **args)


def streamed(live: Live, model: str = RUN, **kwargs: Any) -> tuple[str, str | None]:
    """The streamed answer's text, joined, and its finish reason."""
    pieces, finish = [], None
    for chunk in ask(live, model, stream=True, **kwargs):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(pieces), finish


def test_models_lists_the_base_and_the_run(live: Live) -> None:
    assert [m.id for m in live.client.models.list()] == [live.base, RUN]


def test_answers_whole_and_streamed_equal_generate_reply(live: Live) -> None:
    expected = reference(live, RUN, QUESTION)
    assert expected  # the tuned run answers words, not an empty turn
    whole = ask(live)
    assert whole.choices[0].message.content == expected
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    assert streamed(live) == (expected, whole.choices[0].finish_reason)


def test_the_model_name_selects_the_adapter(live: Live) -> None:
    tuned, base = reference(live, RUN, QUESTION), reference(live, live.base, QUESTION)
    assert tuned != base
    assert ask(live, RUN).choices[0].message.content == tuned
    assert ask(live, live.base).choices[0].message.content == base


def test_stop_strings_cut_the_answer_whole_and_streamed(live: Live) -> None:
    full = reference(live, RUN, QUESTION)
    stop = full[3:5]  # a piece from inside the answer
    cut = full[: full.index(stop)].strip()
    answer = ask(live, stop=[stop, "never-there"])
    assert answer.choices[0].message.content == cut
    assert answer.choices[0].finish_reason == "stop"
    assert streamed(live, stop=stop) == (cut, "stop")


def test_max_tokens_bounds_the_answer(live: Live) -> None:
    answer = ask(live, max_tokens=3)
    assert answer.usage.completion_tokens == 3
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == reference(live, RUN, QUESTION, max_tokens=3)


def test_a_seed_repeats_a_sampled_answer(live: Live) -> None:
    first = [ask(live, temperature=1.5, seed=s).choices[0].message.content for s in (1, 2)]
    again = [ask(live, temperature=1.5, seed=s).choices[0].message.content for s in (1, 2)]
    assert first == again
    assert first[0] != first[1]  # different seeds, different draws (random-ish model, 24 tokens)


def test_concurrent_requests_all_get_their_own_answer(live: Live) -> None:
    questions = [[{"role": "user", "content": f"What is E{i}?"}] for i in range(8)]
    questions += [[{"role": "user", "content": "Tell me about the printer cover and the fault light."}]]
    expected = [reference(live, RUN, q) for q in questions]

    def one(messages: list[dict[str, str]]) -> str:
        return str(ask(live, messages=messages).choices[0].message.content)

    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(one, questions))
    assert answers == expected


def test_a_stream_can_end_with_the_usage(live: Live) -> None:
    chunks = list(ask(live, stream=True, stream_options={"include_usage": True}, max_tokens=5))
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens <= 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_several_runs_are_served_by_name_over_one_base(tiny_tuned_run: Path, ftf_home: Path) -> None:
    from finetuneflow.api.serving import ModelServer, load_served
    from serve.conftest import PROJECT, add_run

    add_run(tiny_tuned_run, run="second")
    add_run(tiny_tuned_run, run="third")
    served = load_served(PROJECT, ["second", "third"], device="cpu")
    assert list(served.adapters) == ["model", "second", "third"]
    with pytest.raises(LookupError, match="no run 'fourth'"):
        load_served(PROJECT, ["fourth"], device="cpu")
    server = ModelServer(served)
    try:
        answers = []
        for name in ("second", "third", "model"):
            done = threading.Event()
            got: list[object] = []
            request = ChatRequest(name, QUESTION, max_tokens=24, temperature=0)  # type: ignore[arg-type]
            server.start(request, lambda _p: None, lambda a, got=got, done=done: (got.append(a), done.set()))
            assert done.wait(60)
            answers.append(got[0].text)  # type: ignore[attr-defined]
    finally:
        server.close()
    assert answers[0] == answers[1] != answers[2]  # the same adapter twice; the base differs


def test_a_model_is_retrieved_by_its_id(live: Live) -> None:
    assert live.client.models.retrieve(RUN).id == RUN
    assert live.client.models.retrieve(live.base).owned_by == "finetuneflow"
    with pytest.raises(openai.NotFoundError) as caught:
        live.client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_a_whole_answer_stops_when_its_client_goes_away(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that gives up on a non-streamed answer (a timeout, Ctrl-C) frees its row at once,
    as a streamed one does, instead of holding it until the answer is complete."""
    jobs: list[Job] = []
    first_piece = threading.Event()
    submit = live.server.scheduler.submit

    def spied(job: Job) -> None:
        pieces = job.on_text

        def on_text(piece: str) -> None:
            if not first_piece.is_set():
                first_piece.set()
                # hold the scheduler (this is its thread) until the route cancels: the answer
                # cannot finish first, whatever the machine's speed
                deadline = time.monotonic() + 30
                while not job.cancelled and time.monotonic() < deadline:
                    time.sleep(0.01)
            pieces(piece)

        job.on_text = on_text
        jobs.append(job)
        submit(job)

    monkeypatch.setattr(live.server.scheduler, "submit", spied)
    host, port = live.url.split("//")[1].split("/")[0].split(":")
    body = json.dumps({"model": RUN, "messages": QUESTION, "max_tokens": 64, "temperature": 0}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((host, int(port))) as client:
        client.sendall(head + body)
        assert first_piece.wait(60)
    # the client is gone: the route cancels the job and the scheduler drops its row
    deadline = time.monotonic() + 60
    while jobs[0].row.finish is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs[0].row.finish == "cancelled" and len(jobs[0].row.tokens) < 64
