"""The chat's memory commands through the real seam (the API's memory, hashing embedder): /teach,
a question whose prompt holds the taught fact, /sources, /correct, /remember, /forget, /status, and
the exchange log keeping the retrieved item ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chat.test_repl import Collected
from finetuneflow import api
from finetuneflow.api.chat import ChatSettings, open_chat
from finetuneflow.api.memory import close_memories
from finetuneflow.api.memory_port import ApiMemory
from finetuneflow.cli.repl import run_repl
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.models.generate import Sampling

FACT = "The warranty of the P3 lasts two years."


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    close_memories()
    yield
    close_memories()


def test_memory_commands_work_through_the_seam(chat_project: str) -> None:
    api.teach(chat_project, "Error E21 means the tank is empty.", config=MemoryConfig(embedder="hash:256"))
    chat = open_chat(chat_project, settings=ChatSettings(sampling=Sampling(max_new_tokens=4)))
    assert isinstance(chat.memory, ApiMemory)
    out = Collected()
    run_repl(chat, [f"/teach {FACT}", "How long is the P3 warranty?", "/sources"], out)
    assert "taught #2" in out.lines
    turn = chat.last
    assert turn.sources[0]["id"] == 2 and turn.sources[0]["source"].startswith("chat ")
    assert FACT in turn.prompt[0]["content"]  # the memory is in the system message the model read
    assert any(line.startswith("#2 score") and FACT in line for line in out.lines)
    (logged,) = api.exchange_log(chat_project)
    assert logged["retrieved_ids"][0] == 2 and logged["retrieved"][0]["text"] == FACT

    run_repl(chat, ["/correct The warranty of the P3 lasts three years.", "/remember", "/status"], out)
    fixed = api.recall(chat_project, "How long is the P3 warranty?", 1)[0]
    assert fixed["kind"] == "correction" and fixed["corrects"] == 2 and "three years" in fixed["text"]
    assert f"kept in memory as #{fixed['id']}" in out.text
    remembered = api.list_memories(chat_project, kind="interaction")[0]
    assert remembered["text"].endswith("A: The warranty of the P3 lasts three years.")
    assert "'correction': 1" in out.text  # /status: the memory's counts by kind

    run_repl(chat, ["/forget #1", "/forget 99", "/forget x"], out)
    assert "forgot #1" in out.lines and "error: no memory item #99 (see `ftf memory list`)" in out.lines
    assert "error: a memory item id is a number (see `ftf memory list`), not 'x'" in out.lines
    assert [r["id"] for r in api.list_memories(chat_project, forgotten=True)] == [1]
