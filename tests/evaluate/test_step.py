"""The evaluate step's contract: the base side is the untrained model, the tuned side the run's; every
question set is asked of both, from the right split, and scored; the result is written to the run."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from evaluate.helpers import tiny_run
from finetuneflow.evaluate.sets import general_questions, question_sets
from finetuneflow.evaluate.step import EvalConfig, evaluate
from finetuneflow.state import runs as rf
from finetuneflow.state.datasets import read_split
from finetuneflow.text.scores import best_score

CFG = EvalConfig(answers=2, recall=3, max_new_tokens=8, threads=1, resamples=200)


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("eval-run"), tiny_model)


@pytest.fixture(scope="module")
def result(run: Path) -> dict[str, Any]:
    return evaluate(run, CFG)


def dataset_of(run: Path) -> Path:
    return Path(rf.read_json(run / rf.CONFIG)["dataset"])


def qa(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in records]


def asked(result: dict[str, Any], name: str) -> list[tuple[str, str]]:
    return [(r["question"], r["reference"]) for r in result["sets"][name]["rows"]]


def fresh_base(tiny_model: Path) -> Any:
    from finetuneflow.models.load import load_causal_lm

    return load_causal_lm(tiny_model).eval()


def test_base_side_is_the_untrained_model_and_tuned_side_differs(
    run: Path, result: dict[str, Any], tiny_model: Path
) -> None:
    from finetuneflow import hardware
    from finetuneflow.models.chat import encode_rows
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.loss import mean_loss

    records = read_split(dataset_of(run), "eval", ("chat",))
    rows, counts = encode_rows(load_tokenizer(tiny_model), records, 64)
    fresh = mean_loss(fresh_base(tiny_model), rows, "cpu", 4, partial(hardware.autocast, "cpu", None))
    chat = result["losses"]["chat"]
    assert chat["examples"] == counts["examples"] == len(records) > 0
    assert chat["base_loss"] == pytest.approx(fresh, abs=1e-3)  # adapter off == the base model
    assert chat["tuned_loss"] != pytest.approx(chat["base_loss"], abs=1e-3)  # the run changed something
    assert json.loads((run / rf.EVALUATION).read_text()) == result


def test_every_set_comes_from_its_own_split(run: Path, result: dict[str, Any]) -> None:
    dataset = dataset_of(run)
    assert list(result["sets"]) == ["eval", "heldout", "recall", "general"]
    assert asked(result, "eval") == qa(read_split(dataset, "eval", ("chat",)))  # 2 of 2
    heldout = qa(read_split(dataset, "heldout", ("chat",)))
    assert len(asked(result, "heldout")) == 2 and set(asked(result, "heldout")) < set(heldout)
    train = qa(read_split(dataset, "train", ("chat",)))
    assert len(asked(result, "recall")) == 3 and set(asked(result, "recall")) < set(train)
    assert asked(result, "general") == [(q.text, q.reference) for q in general_questions()]
    assert result["sets"]["recall"]["label"].startswith("recall probe")


def test_samples_are_seeded_and_sized_by_the_settings(run: Path) -> None:
    dataset = dataset_of(run)
    first = question_sets(dataset, CFG)
    assert [q.id for q in question_sets(dataset, CFG)["recall"]] == [q.id for q in first["recall"]]
    other = question_sets(dataset, EvalConfig(answers=2, recall=3, seed=1))
    assert [q.id for q in other["recall"]] != [q.id for q in first["recall"]]
    ids = [q.id for q in first["recall"]]
    assert ids == sorted(ids, key=int)  # file order kept
    none = question_sets(dataset, EvalConfig(answers=0, recall=0, forgetting=False))
    assert none == {"eval": [], "heldout": [], "recall": [], "general": []}


def test_every_answer_is_scored_against_its_references(result: dict[str, Any]) -> None:
    also = {q.id: q.references for q in general_questions()}
    for name, s in result["sets"].items():
        for row in s["rows"]:
            refs = also.get(row["id"], (row["reference"],)) if name == "general" else (row["reference"],)
            for side in ("base", "tuned"):
                answer = row[side]["answer"]
                assert isinstance(answer, str)
                assert {k: row[side][k] for k in ("em", "f1", "rouge_l", "contains")} == best_score(
                    answer, refs
                )
        for side in ("base", "tuned"):
            f1s = [r[side]["f1"] for r in s["rows"]]
            assert s["means"][side]["f1"] == pytest.approx(sum(f1s) / len(f1s))
        assert s["comparison"]["n"] == s["questions"] == len(s["rows"])
    assert any(r["tuned"]["answer"] for s in result["sets"].values() for r in s["rows"])  # it says something


def test_answer_nll_is_the_reference_answers_loss(
    run: Path, result: dict[str, Any], tiny_model: Path
) -> None:
    """Base side: the untrained model's mean loss on the reference answer tokens, given the prompt."""
    from finetuneflow import hardware
    from finetuneflow.models.chat import encode_rows
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.loss import mean_loss

    tok, base = load_tokenizer(tiny_model), fresh_base(tiny_model)
    amp = partial(hardware.autocast, "cpu", None)
    records = {r["id"]: r for r in read_split(dataset_of(run), "eval", ("chat",))}
    for row in result["sets"]["eval"]["rows"]:
        rows, _ = encode_rows(tok, [records[row["id"]]], 64)
        assert row["base"]["nll"] == pytest.approx(mean_loss(base, rows, "cpu", 1, amp), abs=1e-4)
        assert row["tuned"]["nll"] < row["base"]["nll"]  # trained on the same kind of answer


def test_forgetting_check_measures_both_models_on_the_shipped_text(
    result: dict[str, Any], tiny_model: Path
) -> None:
    from finetuneflow import hardware
    from finetuneflow.evaluate.forgetting import paragraphs
    from finetuneflow.evaluate.sets import general_text
    from finetuneflow.models.chat import encode_rows
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.loss import mean_loss

    text = result["forgetting"]
    records = [{"text": p} for p in paragraphs(general_text())]
    assert text["paragraphs"] == len(records) >= 5
    rows, _ = encode_rows(load_tokenizer(tiny_model), records, 64)
    fresh = mean_loss(fresh_base(tiny_model), rows, "cpu", 4, partial(hardware.autocast, "cpu", None))
    assert text["base_loss"] == pytest.approx(fresh, abs=1e-3)
    assert text["tuned_perplexity"] != text["base_perplexity"]
    assert text["change"] == pytest.approx(text["tuned_perplexity"] / text["base_perplexity"] - 1, abs=1e-3)
    assert math.isfinite(text["base_perplexity"])


def test_the_verdict_is_on_the_unseen_questions(result: dict[str, Any]) -> None:
    verdict = result["verdict"]
    rows = result["sets"]["eval"]["rows"] + result["sets"]["heldout"]["rows"]
    assert verdict["sets"] == ["eval", "heldout"] and verdict["n"] == len(rows) == 4
    assert verdict["tuned"] == pytest.approx(sum(r["tuned"]["f1"] for r in rows) / 4)
    assert verdict["verdict"] == "same"  # 4 questions are too few to tell a difference from noise
    assert verdict["sentence"].startswith("On 4 questions it was not trained on, the tuned model answers")
    assert result["config"]["recall"] == 3 and result["judge"] is None


def test_a_judge_setting_without_a_judge_is_refused_before_any_work(run: Path) -> None:
    with pytest.raises(ValueError, match="judge"):
        evaluate(run, EvalConfig(judge=True))


def test_a_run_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ftf train"):
        evaluate(tmp_path, EvalConfig())
