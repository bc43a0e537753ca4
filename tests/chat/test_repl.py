"""The REPL core over a list of lines and a collecting sink: questions, /commands, errors that do
not end the chat, and what reaches the log and the memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chat.helpers import FakeMemory
from finetuneflow import api
from finetuneflow.api.chat import ChatSession, ChatSettings, open_chat
from finetuneflow.api.memory_port import NOT_INSTALLED, NoMemory
from finetuneflow.cli.repl import run_repl
from finetuneflow.models.generate import Sampling


@dataclass
class Collected:
    """A :class:`Sink` that keeps everything: ``pieces`` streamed, ``lines`` whole."""

    pieces: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    text: str = ""

    def stream(self, piece: str) -> None:
        self.pieces.append(piece)
        self.text += piece

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        self.text += text + "\n"


@pytest.fixture
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture
def chat(chat_project: str, memory: FakeMemory) -> ChatSession:
    return open_chat(chat_project, settings=ChatSettings(sampling=Sampling(max_new_tokens=10)), port=memory)


def test_questions_stream_and_keep_the_history(chat: ChatSession) -> None:
    out = Collected()
    assert run_repl(chat, ["What is E3?", "", "And E4?"], out) == 2
    first, second = chat.turns
    assert second.prompt[:2] == [
        {"role": "user", "content": "What is E3?"},
        {"role": "assistant", "content": first.answer},
    ]
    assert "".join(out.pieces) == first.answer + second.answer  # streamed, nothing else in between
    assert out.lines[0].startswith("chatting with tiny-run")


def test_rate_and_correct_reach_the_log(chat: ChatSession, chat_project: str) -> None:
    out = Collected()
    run_repl(chat, ["What is E3?", "/rate 2", "/correct The paper tray is empty.", "And E4?", "/rate 5"], out)
    first, second = api.exchange_log(chat_project)
    assert (first["rating"], first["correction"]) == (2, "The paper tray is empty.")
    assert (second["rating"], second["correction"]) == (5, None)
    assert second["history"][1] == {"role": "assistant", "content": "The paper tray is empty."}
    assert "rated 2/5" in out.text and "answer corrected" in out.text and "kept in memory as #1" in out.text


def test_memory_commands(chat: ChatSession, memory: FakeMemory) -> None:
    out = Collected()
    lines = ["/teach E3 means the paper tray is empty.", "What is E3?", "/sources", "/remember", "/forget #2"]
    lines += ["/correct 1 E3 means the tray is empty.", "/correct #9 x", "/status"]
    run_repl(chat, lines, out)
    assert "taught #1" in out.text and "#1 score 0.750: E3 means the paper tray is empty." in out.text
    assert (
        "(1 memories used: /sources)" in out.text
        and "remembered as #2" in out.text
        and "forgot #2" in out.text
    )
    # "1" was shown by /sources, so it names a memory item; "#9" always does
    assert ("correct", ("1", "E3 means the tray is empty.")) in memory.calls
    assert ("correct", ("9", "x")) in memory.calls
    assert "memory: items" in out.text and chat.turns[0].correction is None


def test_errors_and_unknown_commands_do_not_end_the_chat(chat: ChatSession) -> None:
    out = Collected()
    lines = [
        "/rate 4",
        "/nope",
        "/rate five",
        "/forget",
        "What is E3?",
        "/rate 9",
        "/help",
        "/quit",
        "Never asked",
    ]
    assert run_repl(chat, lines, out) == 1  # /quit ends it: the last line is not asked
    assert "error: nothing asked yet in this chat: ask a question first" in out.lines
    assert "unknown command /nope; /help lists them" in out.lines
    assert "error: rate the last answer from 1 to 5: /rate 4" in out.lines
    assert "error: a rating is a whole number from 1 to 5, not 9" in out.lines
    assert any(line.startswith("  /correct [ID] NEW") for line in out.lines)


def test_memory_commands_without_memory_say_so(chat_project: str) -> None:
    chat = open_chat(
        chat_project, settings=ChatSettings(sampling=Sampling(max_new_tokens=4)), port=NoMemory(NOT_INSTALLED)
    )
    out = Collected()
    run_repl(chat, ["/teach a fact", "What is E3?", "/remember", "/sources", "/correct Right."], out)
    assert out.lines.count(NOT_INSTALLED) == 2  # /teach and /remember
    assert "the last answer used no memories" in out.lines
    assert (
        f"answer corrected (exchange {chat.turns[0].exchange_id}); not in memory: {NOT_INSTALLED}"
        in out.lines
    )


def test_reset_and_a_literal_slash_question(chat: ChatSession) -> None:
    out = Collected()
    run_repl(chat, ["What is E3?", "/reset", "//etc is a folder?"], out)
    assert [t.question for t in chat.turns] == ["/etc is a folder?"]
    assert chat.turns[0].prompt == [{"role": "user", "content": "/etc is a folder?"}]
