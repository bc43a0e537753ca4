"""A chat session on the tiny tuned run: one-shot and multi-turn answers, the history kept and
trimmed to the budget, memories in the prompt, and every exchange logged with rating and correction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chat.helpers import RUN, FakeMemory
from finetuneflow import api
from finetuneflow.api.chat import ChatSession, ChatSettings, open_chat
from finetuneflow.api.memory_port import NOT_INSTALLED, MemoryUnavailable, NoMemory
from finetuneflow.models.generate import Sampling, generate_reply

SHORT = ChatSettings(sampling=Sampling(max_new_tokens=12), device="cpu")  # compared with CPU answers


def session(project: str, memory: Any = None, settings: ChatSettings = SHORT) -> ChatSession:
    return open_chat(project, settings=settings, port=memory or FakeMemory())


def test_one_question_is_answered_greedily_and_logged(chat_project: str, tiny_tuned_run: Path) -> None:
    from finetuneflow.models.load import load_tuned

    answer = api.chat(chat_project, "What is E3?", settings=SHORT)
    tuned = load_tuned(tiny_tuned_run)
    expected = generate_reply(tuned.model, tuned.tokenizer, [{"role": "user", "content": "What is E3?"}], 12)
    assert answer == expected and answer.startswith("F")
    [row] = api.exchange_log(chat_project)
    assert (row["question"], row["answer"], row["run_id"], row["turn"]) == ("What is E3?", answer, RUN, 0)
    assert row["history"] == [] and row["rating"] is None and row["sampling"]["temperature"] == 0.0


def test_later_questions_see_the_earlier_turns(chat_project: str) -> None:
    chat = session(chat_project)
    first = chat.ask("What is E3?")
    second = chat.ask("And E4?")
    earlier = [{"role": "user", "content": "What is E3?"}, {"role": "assistant", "content": first.answer}]
    assert second.prompt == [*earlier, {"role": "user", "content": "And E4?"}]
    rows = api.exchange_log(chat_project, chat.session_id)
    assert [r["turn"] for r in rows] == [0, 1] and rows[1]["history"] == earlier


def test_streamed_pieces_make_the_logged_answer(chat_project: str) -> None:
    pieces: list[str] = []
    turn = session(chat_project).ask("What is E3?", pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == turn.answer
    assert api.exchange_log(chat_project)[0]["answer"] == turn.answer


def test_the_oldest_turns_leave_the_prompt_first_when_the_budget_is_small(chat_project: str) -> None:
    tight = ChatSettings(sampling=Sampling(max_new_tokens=12), context_tokens=12 + 60)  # prompt: 60 tokens
    chat = session(chat_project, settings=tight)
    questions = [f"What is E{i}?" for i in range(6)]
    for q in questions:
        last = chat.ask(q)
    assert last.dropped_turns > 0 and last.prompt_tokens <= 60
    kept = [m["content"] for m in last.prompt if m["role"] == "user"]
    assert kept == questions[len(questions) - len(kept) :]  # the newest turns, in order


def test_rating_and_correction_are_logged_and_the_correction_is_what_later_turns_see(
    chat_project: str,
) -> None:
    memory = FakeMemory()
    chat = session(chat_project, memory)
    first = chat.ask("What is E3?")
    chat.rate(2)
    result = chat.correct("E3 means the paper tray is empty.")
    assert result["exchange"] == first.exchange_id and result["memory"]["kind"] == "correction"
    assert memory.calls[-1] == (
        "correct",
        ("What is E3?", "Q: What is E3?\nA: E3 means the paper tray is empty."),
    )
    second = chat.ask("Why?")
    assert second.prompt[1] == {"role": "assistant", "content": "E3 means the paper tray is empty."}
    row = api.exchange_log(chat_project)[0]
    assert (row["rating"], row["correction"], row["answer"]) == (
        2,
        "E3 means the paper tray is empty.",
        first.answer,
    )
    with pytest.raises(ValueError, match="1 to 5"):
        chat.rate(6)


def test_a_correction_nothing_in_memory_matches_is_taught_with_a_corrections_importance(
    chat_project: str,
) -> None:
    memory = FakeMemory(correct_finds=False)
    chat = session(chat_project, memory)
    turn = chat.ask("What is E3?")
    chat.correct("Paper out.")
    text = "Q: What is E3?\nA: Paper out."
    assert memory.calls[-1] == ("teach", (text, 0.95, ("correction",), f"chat exchange {turn.exchange_id}"))


def test_memories_go_into_the_prompt_with_their_sources_and_are_logged(chat_project: str) -> None:
    memory = FakeMemory()
    memory.teach("E3 means the paper tray is empty.", 0.8, source="manual.pdf")
    memory.teach("The warranty lasts two years.", 0.7)
    chat = session(chat_project, memory)
    turn = chat.ask("What is E3?")
    assert [n["id"] for n in turn.sources] == [1] and chat.sources() == turn.sources
    assert "[1] E3 means the paper tray is empty. (source: manual.pdf)" in turn.prompt[0]["content"]
    assert "warranty" not in turn.prompt[0]["content"]
    assert api.exchange_log(chat_project)[0]["retrieved"][0] | {"score": 0} == {
        "id": 1, "text": "E3 means the paper tray is empty.", "kind": "fact", "source": "manual.pdf",
        "score": 0, "importance": 0.8,
    }  # fmt: skip


def test_memories_within_their_share_of_the_budget(chat_project: str) -> None:
    memory = FakeMemory()
    for i in range(20):
        memory.teach(f"E3 fact number {i}: " + "the printer cover is open. " * 6, 0.9 - i / 100)
    settings = ChatSettings(sampling=Sampling(max_new_tokens=12), memories=20, context_tokens=12 + 300)
    turn = session(chat_project, memory, settings).ask("What is E3?")
    assert 0 < len(turn.sources) < 20 and turn.prompt_tokens <= 300
    assert [n["id"] for n in turn.sources] == list(range(1, len(turn.sources) + 1))  # best first


def test_remember_teach_forget_and_status_go_to_the_memory(chat_project: str) -> None:
    memory = FakeMemory()
    chat = session(chat_project, memory)
    chat.teach("E3 means the paper tray is empty.")
    chat.ask("What is E3?")
    chat.rate(5)
    chat.correct("The tray is empty.")  # memory item 2: the correction
    chat.remember()  # the exchange as it stands: with the corrected answer
    assert memory.calls[-1] == ("remember_exchange", ("What is E3?", "The tray is empty.", [1], 5))
    chat.forget("1")
    assert [i["id"] for i in memory.items] == [2, 3]
    assert chat.status()["memory"] == {"items": 2} and chat.status()["run"] == RUN


def test_without_memory_chat_works_and_memory_commands_say_why(chat_project: str) -> None:
    chat = session(chat_project, NoMemory(NOT_INSTALLED))
    chat.ask("What is E3?")
    assert chat.status()["memory"] == NOT_INSTALLED
    for command in (lambda: chat.teach("x"), chat.remember, lambda: chat.forget("1")):
        with pytest.raises(MemoryUnavailable, match="not installed"):
            command()
    assert chat.correct("Paper out.")["memory"] == NOT_INSTALLED  # the exchange is corrected all the same
    assert api.exchange_log(chat_project)[0]["correction"] == "Paper out."


def test_reset_starts_a_new_session_without_the_earlier_turns(chat_project: str) -> None:
    chat = session(chat_project)
    chat.ask("What is E3?")
    before = chat.session_id
    chat.reset()
    turn = chat.ask("And E4?")
    assert chat.session_id != before and turn.prompt == [{"role": "user", "content": "And E4?"}]
    with pytest.raises(LookupError, match="nothing asked yet"):
        session(chat_project).rate(4)


def test_a_base_model_or_a_run_but_not_both(chat_project: str, tiny_model: Path) -> None:
    chat = open_chat(chat_project, base=str(tiny_model), settings=SHORT, port=FakeMemory())
    chat.ask("hello")
    assert api.exchange_log(chat_project)[0]["run_id"] is None
    with pytest.raises(ValueError, match="not both"):
        open_chat(chat_project, RUN, base=str(tiny_model))
    with pytest.raises(LookupError, match="--base"):
        open_chat("empty-project-with-no-run")


def test_bad_settings_are_refused_before_loading_anything(chat_project: str) -> None:
    from finetuneflow.errors import ConfigError

    bad = ChatSettings(sampling=Sampling(temperature=-1), memories=-1, memory_share=2)
    with pytest.raises(ConfigError) as err:
        open_chat(chat_project, settings=bad)
    assert [e.split(":")[0] for e in err.value.errors] == ["sampling.temperature", "memories", "memory_share"]


def test_a_chat_whose_project_was_deleted_logs_nothing_into_another(chat_project: str) -> None:
    from finetuneflow.api import projects as papi
    from finetuneflow.api.chat import ChatSettings, open_chat
    from finetuneflow.models.generate import Sampling

    chat = open_chat(chat_project, memory=False, settings=ChatSettings(sampling=Sampling(max_new_tokens=2)))
    chat.ask("Hello?")
    api.delete_project(chat_project)
    papi.create_project("other")  # SQLite gives it the deleted project's id
    with pytest.raises(LookupError, match="was deleted while this chat was open"):
        chat.ask("Still there?")
    assert api.exchange_log("other") == []
