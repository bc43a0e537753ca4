"""Memories per request (through the MemoryPort seam, into the system prompt as ``ftf chat`` puts
them) and ``/v1/embeddings`` with the openai client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from chat.helpers import FakeMemory

from serve.conftest import RUN, start
from serve.test_chat import reference


@pytest.fixture
def with_memory(tiny_tuned_run: Path, ftf_home: Path) -> Iterator[tuple[openai.OpenAI, FakeMemory, object]]:
    memory = FakeMemory()
    memory.teach("E3 means the printer cover is open", 0.9, (), "manual.md")
    server, background = start(tiny_tuned_run, memory=memory)
    try:
        yield openai.OpenAI(base_url=background.url, api_key="x", max_retries=0), memory, server
    finally:
        background.stop()
        server.close()


def test_memory_goes_into_the_system_prompt(with_memory: tuple[openai.OpenAI, FakeMemory, object]) -> None:
    from finetuneflow.models.context import build_messages

    client, memory, server = with_memory
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is E3?"}]
    answer = client.chat.completions.create(
        model=RUN, messages=question, max_tokens=24, temperature=0, extra_body={"memory": True}
    )
    assert ("recall", ("What is E3?", 5)) in memory.calls
    notes = memory.items
    prompt = build_messages("Be brief.", notes, [], "What is E3?")
    assert "[1] E3 means the printer cover is open (source: manual.md)" in prompt[0]["content"]
    live = type("L", (), {"server": server})
    assert answer.choices[0].message.content == reference(live, RUN, prompt)  # type: ignore[arg-type]
    assert [s["id"] for s in answer.model_extra["sources"]] == [1]
    plain = client.chat.completions.create(model=RUN, messages=question, max_tokens=24, temperature=0)
    assert len(memory.calls) == 2  # teach, one recall: no memory unless asked
    assert plain.usage.prompt_tokens < answer.usage.prompt_tokens


def test_memory_needs_turns_in_order(with_memory: tuple[openai.OpenAI, FakeMemory, object]) -> None:
    client, _, _ = with_memory
    with pytest.raises(openai.BadRequestError, match="ending with the user's question"):
        client.chat.completions.create(
            model=RUN, messages=[{"role": "assistant", "content": "hi"}], extra_body={"memory": True}
        )


def test_embeddings_are_the_embedders_rows(tiny_tuned_run: Path, ftf_home: Path) -> None:
    from finetuneflow.api.serving import ModelServer, ServingSettings, load_served
    from finetuneflow.models.embed import load_embedder
    from finetuneflow.serve.config import ServeConfig
    from finetuneflow.serve.run import start_background
    from serve.conftest import PROJECT, add_run

    add_run(tiny_tuned_run)
    embedder = load_embedder("hash:64")
    server = ModelServer(load_served(PROJECT, [RUN], device="cpu"), ServingSettings(), embedder=embedder)
    background = start_background(server, ServeConfig(port=0))
    try:
        client = openai.OpenAI(base_url=background.url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()][-1] == "hash:64"
        texts = ["the printer cover is open", "paper jam in tray 2"]
        asked = client.embeddings.create(model="hash:64", input=texts, encoding_format="float")
        default = client.embeddings.create(model="hash:64", input=texts)  # asks base64, decodes it
        raw = client.embeddings.create(model="hash:64", input=texts, encoding_format="base64")
        decoded = [np.frombuffer(base64.b64decode(str(d.embedding)), dtype="<f4") for d in raw.data]
        for rows in ([d.embedding for d in asked.data], [d.embedding for d in default.data], decoded):
            np.testing.assert_allclose(np.array(rows, dtype=np.float32), embedder.embed(texts), atol=1e-6)
        one = client.embeddings.create(model="hash:64", input="one text")
        assert len(one.data) == 1 and len(one.data[0].embedding) == 64
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="all-MiniLM-L6-v2", input="x")
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="hash:64", input=[1, 2, 3])
        # no shorter vectors: the embedder is not trained to be cut (Matryoshka), so never silently
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="hash:64", input="x", dimensions=8)
        assert caught.value.param == "dimensions" and "64" in caught.value.message
        whole = client.embeddings.create(model="hash:64", input="x", dimensions=64)
        assert len(whole.data[0].embedding) == 64
    finally:
        background.stop()
        server.close()


def test_a_taught_fact_reaches_the_served_prompt_through_the_real_memory(
    tiny_tuned_run: Path, ftf_home: Path
) -> None:
    """No fake: `api.teach` stores the fact, the server's default port is the API's memory."""
    from finetuneflow import api
    from finetuneflow.api.memory import close_memories
    from finetuneflow.api.memory_port import memory_port
    from finetuneflow.memory.config import MemoryConfig
    from serve.conftest import PROJECT

    hashed = MemoryConfig(embedder="hash:256")
    taught = api.teach(PROJECT, "E3 means the printer cover is open", config=hashed)
    api.teach(PROJECT, "Paper jams clear from tray 2", config=hashed)
    close_memories()  # the server opens the memory afresh, with the embedder the project recorded
    server, background = start(tiny_tuned_run, memory=memory_port(PROJECT, True))
    try:
        client = openai.OpenAI(base_url=background.url, api_key="x", max_retries=0)
        question = [{"role": "user", "content": "What does E3 mean on the printer?"}]
        answer = client.chat.completions.create(
            model=RUN, messages=question, max_tokens=8, temperature=0, extra_body={"memory": True}
        )
        sources = answer.model_extra["sources"]
        assert sources[0]["id"] == taught["id"] and "printer cover" in sources[0]["text"]
        server.memory = memory_port(PROJECT, False)  # as `ftf serve --no-memory` builds it
        with pytest.raises(openai.BadRequestError, match="memory is off"):
            client.chat.completions.create(model=RUN, messages=question, extra_body={"memory": True})
    finally:
        background.stop()
        server.close()
        close_memories()
