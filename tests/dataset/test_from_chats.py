"""Chats become training data: exactly the corrected and well-rated exchanges reach the pool (a
correction wins over the wrong answer, a rerun adds nothing twice, review is respected), and the
corrections become preference pairs that TRL's DPOTrainer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetuneflow import api, paths
from finetuneflow.dataset import review
from finetuneflow.state import ChatExchange, session_scope
from finetuneflow.state.repo import get_or_create_project

P = "p"


def log(
    question: str, answer: str, rating: int | None = None, correction: str | None = None, **extra: Any
) -> int:
    """A logged exchange, as `ftf chat` writes it."""
    with session_scope() as s:
        pid = get_or_create_project(s, P).id
        row = ChatExchange(
            project_id=pid, session=extra.get("session", "s1"), turn=0, model="m", question=question,
            answer=answer, rating=rating, correction=correction, history=extra.get("history", []),
            system=extra.get("system"), retrieved=[], sampling={},
        )  # fmt: skip
        s.add(row)
        s.flush()
        return row.id


def pool() -> dict[str, dict[str, Any]]:
    """Chat examples of the default dataset by their last answer."""
    items = review.list_examples(P, "default", status=list(review.STATUSES), origin="chat").items
    return {item["answer"]: item for item in items}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_corrections_and_answers_rated_at_the_threshold_become_examples() -> None:
    log("What is E1?", "Cover open.", rating=5)
    log("What is E2?", "Paper jam.", rating=4)
    log("What is E3?", "Toner low.", rating=3)
    log("What is E4?", "No idea.")
    wrong = log("What is E5?", "Fan broken.", rating=1, correction="The lid sensor failed.")
    report = api.dataset_from_chats(P, min_rating=4)
    assert set(pool()) == {"Cover open.", "Paper jam.", "The lid sensor failed."}
    assert (report["corrected"], report["rated"], report["added"]) == (1, 2, 3)
    assert report["dropped"] == {"rated below 4": 1, "unrated": 1}
    corrected = pool()["The lid sensor failed."]
    assert corrected["messages"] == [user("What is E5?"), assistant("The lid sensor failed.")]
    assert corrected["rating"] is None and corrected["status"] == "new" and corrected["source"] == "chat:s1"
    assert pool()["Cover open."]["rating"] == 5
    assert review.get_example(P, "default", corrected["id"])["id"] == corrected["id"]  # reviewable
    assert wrong in {e["id"] for e in api.exchange_log(P) if e["correction"]}


def test_the_example_keeps_the_system_prompt_and_the_earlier_turns_the_model_saw() -> None:
    history = [user("Hi"), assistant("Hello!")]
    log("And E3?", "Toner.", rating=5, history=history, system="Be brief.")
    api.dataset_from_chats(P)
    [item] = pool().values()
    system = {"role": "system", "content": "Be brief."}
    assert item["messages"] == [system, *history, user("And E3?"), assistant("Toner.")]


def test_a_correction_wins_over_the_same_wrong_answer_rated_elsewhere() -> None:
    log("What is E5?", "Fan broken.", rating=5, session="a")
    log("What is E5?", "Fan broken.", correction="The lid sensor failed.", session="b")
    report = api.dataset_from_chats(P)
    assert set(pool()) == {"The lid sensor failed."}
    assert report["dropped"] == {"the same answer was corrected in another exchange": 1}


def test_a_second_run_adds_nothing_and_does_not_revive_what_review_deleted() -> None:
    log("What is E1?", "Cover open.", rating=5)
    log("What is E2?", "Paper jam.", rating=5)
    api.dataset_from_chats(P)
    review.delete_example(P, "default", pool()["Paper jam."]["id"])
    again = api.dataset_from_chats(P)
    assert (again["added"], again["already_in_pool"]) == (0, 2)
    assert {a: i["status"] for a, i in pool().items()} == {"Cover open.": "new", "Paper jam.": "deleted"}


def test_an_answer_corrected_after_it_reached_the_pool_is_rejected_there() -> None:
    exchange = log("What is E5?", "Fan broken.", rating=5)
    api.dataset_from_chats(P)
    with session_scope() as s:
        s.get(ChatExchange, exchange).correction = "The lid sensor failed."  # /correct, later
    report = api.dataset_from_chats(P)
    assert (report["added"], report["superseded"]) == (1, 1)
    old, new = pool()["Fan broken."], pool()["The lid sensor failed."]
    assert (old["status"], old["reason"]) == ("rejected", f"corrected in chat (exchange {exchange})")
    assert new["status"] == "new"


def test_the_pool_examples_are_built_into_the_dataset(tiny_model: Path) -> None:
    from finetuneflow.dataset.convert import DatasetConfig
    from finetuneflow.state.datasets import read_split

    for i in range(6):
        log(f"What is E{i}?", f"Fault {i}.", correction=f"Fault {i}: the lid is open.", session=f"s{i}")
    api.dataset_from_chats(P)
    manifest = api.build_dataset(P, DatasetConfig(tokenizer=str(tiny_model)))
    built = read_split(Path(manifest["path"]), "train", ("chat",)) + read_split(
        Path(manifest["path"]), "eval", ("chat",)
    )
    assert sorted(r["messages"][-1]["content"] for r in built) == [
        f"Fault {i}: the lid is open." for i in range(6)
    ]


def test_corrections_are_preference_pairs_trl_reads(tiny_model: Path) -> None:
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    log(
        "What is E5?",
        "Fan broken.",
        correction="The lid sensor failed.",
        history=[user("Hi"), assistant("Hey")],
    )
    log("What is E6?", "Paper jam.", rating=5)  # rated, not corrected: no pair
    report = api.dataset_from_chats(P)
    path = Path(report["preference_path"])
    assert path == paths.project_dir(P) / "datasets/default/preference/train.jsonl"
    data = load_dataset("json", data_files={"train": str(path)})["train"]
    assert (
        data.column_names == ["prompt", "chosen", "rejected"] and len(data) == report["preference_pairs"] == 1
    )
    row = data[0]
    assert is_conversational(row)
    assert row["prompt"] == [user("Hi"), assistant("Hey"), user("What is E5?")]
    assert (row["chosen"], row["rejected"]) == (
        [assistant("The lid sensor failed.")],
        [assistant("Fan broken.")],
    )


def test_dpo_trainer_takes_a_step_on_the_pairs(tiny_model: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    log("What is E5?", "Fan broken.", correction="The lid sensor failed.")
    log("What is E6?", "Toner.", correction="Paper jam.")
    data = load_dataset("json", data_files={"train": api.dataset_from_chats(P)["preference_path"]})["train"]
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
        save_strategy="no", use_cpu=True, logging_steps=1,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(str(tiny_model)),
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(0.6931, abs=1e-3)  # step 1: policy == reference, loss = ln 2
    assert logged["logps/chosen"] < 0 and logged["logps/rejected"] < 0


def test_bad_input_is_refused() -> None:
    log("q", "a", rating=5)
    with pytest.raises(ValueError, match="min_rating"):
        api.dataset_from_chats(P, min_rating=0)
    with pytest.raises(ValueError, match="name"):
        api.dataset_from_chats(P, dataset="../x")
    with pytest.raises(LookupError, match="no project"):
        api.dataset_from_chats("nope")
