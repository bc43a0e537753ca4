"""Evaluation with the project's memory: base+memory and tuned+memory answer every set when a memory
is given (through the api: when it has items), with the prompt chat builds (``build_messages`` on the
recalled notes); the recalled ids and sources are kept per question; the memory's own verdicts say
plainly when it does not help; an empty or switched-off memory adds no column."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
from chat.conftest import chat_project  # noqa: F401 - the fixture, used by the api tests below

from evaluate.helpers import tiny_run
from finetuneflow import api
from finetuneflow.api.memory import close_memories
from finetuneflow.evaluate.answers import answer_nll
from finetuneflow.evaluate.sets import Question
from finetuneflow.evaluate.step import EvalConfig, evaluate
from finetuneflow.evaluate.summary import summarise
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.models.context import MEMORY_HEADER, build_messages

CFG = EvalConfig(
    answers=2, recall=0, forgetting=False, max_new_tokens=6, gen_batch=1, threads=1, resamples=200
)
NOTES = [
    {"id": 7, "text": "Error E99 means the printer cover is open.", "source": "manual.md", "score": 0.9},
    {"id": 3, "text": "The warranty lasts two years.", "source": "faq.md", "score": 0.4},
]
MEMORY_SIDES = ("base_memory", "tuned_memory")


class FakeMemory:
    """``retrieve(question)``: the same two notes for every question; the questions are kept."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, question: str) -> list[dict[str, Any]]:
        self.asked.append(question)
        return [dict(n) for n in NOTES]


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("eval-memory-run"), tiny_model)


@pytest.fixture(scope="module")
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture(scope="module")
def result(run: Path, memory: FakeMemory) -> dict[str, Any]:
    return evaluate(run, CFG, retrieve=memory)


def test_every_set_is_answered_by_four_sides_with_the_recalled_items_recorded(
    result: dict[str, Any], memory: FakeMemory
) -> None:
    assert list(result["sets"]) == ["eval", "heldout"]
    for s in result["sets"].values():
        assert list(s["means"]) == ["base", "tuned", *MEMORY_SIDES]
        assert set(s["memory_comparisons"]) == set(MEMORY_SIDES)
        for row in s["rows"]:
            assert all(
                isinstance(row[side]["answer"], str) and 0 <= row[side]["f1"] <= 1 for side in MEMORY_SIDES
            )
            recorded = row["memory"]
            assert [(m["id"], m["source"]) for m in recorded["retrieved"]] == [
                (7, "manual.md"),
                (3, "faq.md"),
            ]
            assert recorded["in_prompt"] == [7, 3] and recorded["dropped"] == []
    # recalled once per question, with the question as asked
    assert memory.asked == [r["question"] for s in result["sets"].values() for r in s["rows"]]


def test_the_memory_prompt_is_chats_and_gives_the_same_greedy_answer(
    run: Path, result: dict[str, Any]
) -> None:
    from finetuneflow import hardware
    from finetuneflow.models.generate import Sampling, generate_reply
    from finetuneflow.models.load import load_tuned

    row = result["sets"]["eval"]["rows"][0]
    messages = build_messages(None, NOTES, [], row["question"])
    assert MEMORY_HEADER in messages[0]["content"] and "[7] Error E99" in messages[0]["content"]
    tuned = load_tuned(run, "cpu")
    greedy = Sampling(max_new_tokens=CFG.max_new_tokens)
    question = Question(row["id"], messages, row["reference"])
    amp = partial(hardware.autocast, "cpu", None)
    with tuned.base() as base_model:
        assert generate_reply(base_model, tuned.tokenizer, messages, greedy) == row["base_memory"]["answer"]
        nll = answer_nll(base_model, tuned.tokenizer, question, 1024, "cpu", amp)
    assert row["base_memory"]["nll"] == pytest.approx(nll, abs=1e-4)
    assert generate_reply(tuned.model, tuned.tokenizer, messages, greedy) == row["tuned_memory"]["answer"]


def test_the_memory_verdicts_compare_each_model_with_itself_without_memory(result: dict[str, Any]) -> None:
    verdicts = result["memory_verdicts"]
    assert set(verdicts) == set(MEMORY_SIDES)
    rows = [r for s in result["sets"].values() for r in s["rows"]]
    for side, peer in (("base_memory", "base"), ("tuned_memory", "tuned")):
        v = verdicts[side]
        assert v["n"] == len(rows) == 4 and v["sets"] == ["eval", "heldout"]
        assert v["base"] == pytest.approx(sum(r[peer]["f1"] for r in rows) / 4)
        assert v["tuned"] == pytest.approx(sum(r[side]["f1"] for r in rows) / 4)
        assert "with memories in its prompt answers **the same** as without them" in v["sentence"]
        assert v["sentence"].endswith("The memory does not help here.")  # 4 questions cannot tell


def test_memory_off_or_absent_adds_no_column(run: Path) -> None:
    for cfg, retrieve in ((CFG, None), (EvalConfig(**{**vars(CFG), "memory": "off"}), FakeMemory())):
        result = evaluate(run, cfg, retrieve=retrieve)
        assert result["memory_verdicts"] is None
        for s in result["sets"].values():
            assert list(s["means"]) == ["base", "tuned"] and s["memory_comparisons"] is None
            assert all("memory" not in r and "base_memory" not in r for r in s["rows"])


def test_memory_on_without_a_memory_is_refused_before_any_work(run: Path) -> None:
    with pytest.raises(ValueError, match="memory: on, but no memory was given"):
        evaluate(run, EvalConfig(memory="on"))
    assert EvalConfig(memory="sometimes").problems() == [
        "memory: must be one of auto, on, off, not 'sometimes'"
    ]


def side(f1: float) -> dict[str, Any]:
    return {"answer": "a", "em": 0.0, "f1": f1, "rouge_l": f1, "contains": 0.0, "nll": 1.0}


@pytest.mark.parametrize(
    ("with_memory", "word", "tail"),
    [
        (0.9, "**better** than without them", ""),
        (
            0.3,
            "**the same** as without them (the difference is within noise)",
            " The memory does not help here.",
        ),
        (0.0, "**worse** than without them", " The memory makes it worse here."),
    ],
)
def test_a_memory_verdict_says_plainly_whether_it_helps(with_memory: float, word: str, tail: str) -> None:
    rows = [
        {"id": str(i), "question": "q", "reference": "r", "source": "",
         "base": side(0.3), "tuned": side(0.5), "base_memory": side(with_memory), "tuned_memory": side(0.5)}
        for i in range(8)
    ]  # fmt: skip
    verdicts = summarise({"eval": rows}, resamples=200)["memory_verdicts"]
    base = verdicts["base_memory"]["sentence"]
    assert base.startswith("On 8 questions it was not trained on, the base model with memories in its prompt")
    assert word in base and base.endswith(")." + tail)
    assert "**the same** as without them" in verdicts["tuned_memory"]["sentence"]


MEM = MemoryConfig(embedder="hash:256")
API_CFG = EvalConfig(
    answers=2, recall=0, forgetting=False, max_new_tokens=4, threads=1, resamples=100, memories=2
)


@pytest.fixture
def fresh_memories() -> Any:
    close_memories()
    yield
    close_memories()


@pytest.mark.usefixtures("fresh_memories")
def test_through_the_api_the_columns_follow_the_memory(chat_project: str) -> None:  # noqa: F811
    empty = api.evaluate(chat_project, config=API_CFG)  # auto, and the memory is empty
    assert empty["memory_verdicts"] is None and "base_memory" not in empty["sets"]["eval"]["rows"][0]
    with pytest.raises(
        ValueError, match=r"memory: on, but project 'p'.s memory is empty: fill it with `ftf memory sync"
    ):
        api.evaluate(chat_project, config=EvalConfig(**{**vars(API_CFG), "memory": "on"}))

    api.teach(chat_project, "Error E99 means the printer cover is open.", source="manual.md", config=MEM)
    api.teach(chat_project, "The warranty lasts two years.", config=MEM)
    api.teach(chat_project, "Error E98 means the paper tray is empty.", config=MEM)
    result = api.evaluate(chat_project, config=API_CFG)
    rows = result["sets"]["eval"]["rows"]
    assert set(result["memory_verdicts"]) == set(MEMORY_SIDES)
    for row in rows:
        recalled = api.recall(chat_project, row["question"], 2)
        assert [m["id"] for m in row["memory"]["retrieved"]] == [m["id"] for m in recalled]
        assert len(recalled) == 2 and "base_memory" in row and "tuned_memory" in row
    assert any(m["source"] == "manual.md" for row in rows for m in row["memory"]["retrieved"])

    off = api.evaluate(chat_project, config=EvalConfig(**{**vars(API_CFG), "memory": "off"}))
    assert off["memory_verdicts"] is None
