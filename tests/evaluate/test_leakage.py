"""Leakage in the memory columns: a question whose own source (the chunk it was written from) is
recalled answers open book. Each row records the own-source items and whether one was in the prompt;
with ``memory_exclude_source`` (the default) the leaked questions are asked again without them (the
next best items take their place) and the memory columns are scored both ways; the report and the
verdicts say both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chat.conftest import chat_project  # noqa: F401 - the fixture, used by the api test below
from train.helpers import chat_dataset

from finetuneflow.api.memory import close_memories
from finetuneflow.evaluate.step import EvalConfig, evaluate
from finetuneflow.export.report_answers import answer_tables, lead
from finetuneflow.models.context import build_messages
from finetuneflow.state.datasets import read_split, split_path, write_jsonl
from finetuneflow.text.questions import question_of

CFG = EvalConfig(
    answers=3, recall=0, forgetting=False, max_new_tokens=6, gen_batch=2, threads=1, resamples=200, memories=2
)
OTHER = {"id": 50, "text": "The warranty lasts two years.", "source": "faq.md", "score": 0.5, "chunk_id": 5}
SPARE = {"id": 60, "text": "Error E1 means the lid is open.", "source": "taught", "score": 0.3}


def qa(question: str, answer: str, chunk: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": question, "source": "qa.csv", "messages": [
        {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}  # fmt: skip
    return row | ({"chunk_id": chunk} if chunk is not None else {})


EVAL = [qa("What is E99?", "Fault 99: the cover is open.", 99), qa("What is E98?", "Fault 98: no paper.", 98)]
HELDOUT = [
    qa("Which fault is E7?", "Fault 7: the tray is out.", 7),
    qa("Which fault is E8?", "Fault 8.", None),
]
CHUNK_OF = {r["messages"][0]["content"]: r.get("chunk_id") for r in EVAL + HELDOUT}


def memory(question: str) -> list[dict[str, Any]]:
    """The question's own chunk first (as a synced memory recalls a Q&A row: verbatim), then the rest."""
    chunk = CHUNK_OF[question]
    if chunk is None:
        return [dict(OTHER), dict(SPARE)]
    own = {"id": 1000 + chunk, "text": f"Q: {question} A: ...", "source": "qa.csv line 3",
           "score": 0.9, "chunk_id": chunk}  # fmt: skip
    return [own, dict(OTHER), dict(SPARE)]


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.step import train

    root = tmp_path_factory.mktemp("eval-leakage")
    dataset = chat_dataset(root / "ds")
    write_jsonl(split_path(dataset, "chat", "eval"), EVAL)
    write_jsonl(split_path(dataset, "chat", "heldout"), HELDOUT)
    cfg = TrainConfig(
        base_model=str(tiny_model), max_len=64, max_steps=2, precision="fp32", threads=1, learning_rate=1e-2
    )
    train(dataset, root / "run", cfg)
    return root / "run"


@pytest.fixture
def fresh_memories() -> Any:
    close_memories()
    yield
    close_memories()


@pytest.fixture(scope="module")
def result(run: Path) -> dict[str, Any]:
    return evaluate(run, CFG, retrieve=memory)


def test_a_question_reads_the_chunk_it_was_written_from(run: Path) -> None:
    dataset = Path(__import__("json").loads((run / "config.json").read_text())["dataset"])
    questions = [question_of(r) for r in read_split(dataset, "heldout", ("chat",))]
    assert [q.chunk_id for q in questions if q] == [7, None]


def test_each_row_flags_its_own_source_and_is_asked_again_without_it(result: dict[str, Any]) -> None:
    rows = {r["question"]: r for s in result["sets"].values() for r in s["rows"]}
    for question, chunk in CHUNK_OF.items():
        mem = rows[question]["memory"]
        if chunk is None:  # nothing tells its source: nothing flagged, nothing asked again
            assert mem["own_source"] == [] and mem["leak"] is False and mem["excluding_source"] is None
            assert "excluding_source" not in rows[question]
            continue
        assert mem["own_source"] == [1000 + chunk] and mem["leak"] is True
        assert mem["in_prompt"] == [1000 + chunk, 50]
        assert [m["chunk_id"] for m in mem["retrieved"]] == [chunk, 5]
        assert mem["excluding_source"]["in_prompt"] == [50, 60]  # the spare takes its place
        assert mem["excluding_source"]["own_source"] == [] and mem["excluding_source"]["leak"] is False
        again = rows[question]["excluding_source"]
        assert set(again) == {"base_memory", "tuned_memory"}
        assert all(isinstance(a["answer"], str) and 0 <= a["f1"] <= 1 for a in again.values())


def test_the_answer_without_its_own_source_is_the_greedy_answer_to_that_prompt(
    run: Path, result: dict[str, Any]
) -> None:
    from finetuneflow.models.generate import Sampling, generate_reply
    from finetuneflow.models.load import load_tuned

    row = result["sets"]["eval"]["rows"][0]
    messages = build_messages(None, [OTHER, SPARE], [], row["question"])
    tuned = load_tuned(run, "cpu")
    greedy = Sampling(max_new_tokens=CFG.max_new_tokens)
    assert (
        generate_reply(tuned.model, tuned.tokenizer, messages, greedy)
        == (row["excluding_source"]["tuned_memory"]["answer"])
    )


def test_the_summary_scores_the_memory_both_ways(result: dict[str, Any]) -> None:
    heldout = result["sets"]["heldout"]
    leak = heldout["leakage"]
    assert (leak["questions"], leak["own_source_recalled"], leak["leaked"]) == (2, 1, 1)
    rows = heldout["rows"]
    for side in ("base_memory", "tuned_memory"):  # the leaked row's second answer, the other's only one
        clean = [rows[0]["excluding_source"][side]["f1"], rows[1][side]["f1"]]
        assert leak["means_excluding_source"][side]["f1"] == pytest.approx(sum(clean) / 2, abs=1e-3)
        assert heldout["means"][side]["f1"] == pytest.approx(
            (rows[0][side]["f1"] + rows[1][side]["f1"]) / 2, abs=1e-3
        )
    verdict = result["memory_verdicts"]["tuned_memory"]
    assert verdict["excluding_source"]["leaked"] == 3 and verdict["excluding_source"]["n"] == 4
    assert verdict["excluding_source"]["sentence"].startswith(
        "With each question's own source left out of its memories (3 of 4 had it in the prompt), on 4 "
    )


def test_the_report_flags_the_own_source_and_shows_both_scores(result: dict[str, Any]) -> None:
    text = "\n".join(lead(result) + answer_tables(result))
    assert "With each question's own source left out of its memories (3 of 4" in text
    assert "tuned → tuned+memory, own source left out (2 of 2 had it in the prompt)" in text
    assert "#1099 (qa.csv line 3) [own source]" in text and "#50 (faq.md) [own source]" not in text


def test_with_exclusion_off_the_leak_is_still_flagged_but_not_rescored(run: Path) -> None:
    result = evaluate(run, EvalConfig(**{**vars(CFG), "memory_exclude_source": False}), retrieve=memory)
    rows = result["sets"]["eval"]["rows"]
    assert all(r["memory"]["leak"] and "excluding_source" not in r["memory"] for r in rows)
    assert all("excluding_source" not in r for r in rows)
    assert result["sets"]["eval"]["leakage"]["leaked"] == 2
    assert result["sets"]["eval"]["leakage"]["means_excluding_source"] is None
    assert "excluding_source" not in result["memory_verdicts"]["base_memory"]
    assert "own source left out" not in "\n".join(lead(result))


@pytest.mark.usefixtures("fresh_memories")
def test_the_api_recalls_spares_only_when_excluding(chat_project: str) -> None:  # noqa: F811
    """The spares (twice the memories) are what replace a question's own source."""
    from finetuneflow import api
    from finetuneflow.api.runs import _retriever
    from finetuneflow.memory.config import MemoryConfig

    for i in range(6):
        api.teach(
            chat_project, f"Error E{i} means part {i} is loose.", config=MemoryConfig(embedder="hash:256")
        )
    on = _retriever(chat_project, EvalConfig(memories=2))
    off = _retriever(chat_project, EvalConfig(memories=2, memory_exclude_source=False))
    assert on is not None and off is not None
    assert len(on("What does error E3 mean?")) == 4 and len(off("What does error E3 mean?")) == 2
