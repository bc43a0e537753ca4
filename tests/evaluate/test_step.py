"""The evaluate step's contract: the base side is the untrained model, the tuned side the run's,
both measured on the eval split of the run's own dataset, and the result is written to the run."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from train.helpers import tiny_run  # tests/ is on sys.path (tests/conftest.py)

from finetuneflow.evaluate.step import EvalConfig, evaluate
from finetuneflow.state import runs as rf
from finetuneflow.state.datasets import read_split


@pytest.fixture(scope="module")
def run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("eval-run"), tiny_model, steps=4)


def test_base_side_is_the_untrained_model_and_tuned_side_differs(run: Path, tiny_model: Path) -> None:
    from finetuneflow import hardware
    from finetuneflow.models.chat import encode_rows
    from finetuneflow.models.load import load_causal_lm, load_tokenizer
    from finetuneflow.models.loss import mean_loss

    result = evaluate(run, EvalConfig(answers=2, max_new_tokens=8, threads=1))
    dataset = Path(rf.read_json(run / rf.CONFIG)["dataset"])
    records = read_split(dataset, "eval", ("chat",))
    rows, counts = encode_rows(load_tokenizer(tiny_model), records, 64)
    amp = partial(hardware.autocast, "cpu", None)
    fresh = mean_loss(load_causal_lm(tiny_model).eval(), rows, "cpu", 4, amp)
    chat = result["losses"]["chat"]
    assert chat["examples"] == counts["examples"] == len(records) > 0
    assert chat["base_loss"] == pytest.approx(fresh, abs=1e-3)  # adapter off == the base model
    assert chat["tuned_loss"] != pytest.approx(chat["base_loss"], abs=1e-3)  # the run changed something
    assert json.loads((run / rf.EVALUATION).read_text()) == result


def test_answers_are_the_eval_split_questions_with_their_references(run: Path) -> None:
    result = evaluate(run, EvalConfig(answers=2, max_new_tokens=8, threads=1))
    dataset = Path(rf.read_json(run / rf.CONFIG)["dataset"])
    records = read_split(dataset, "eval", ("chat",))[:2]
    assert [a["question"] for a in result["answers"]] == [r["messages"][-2]["content"] for r in records]
    assert [a["reference"] for a in result["answers"]] == [r["messages"][-1]["content"] for r in records]
    assert all(isinstance(a["base"], str) and isinstance(a["tuned"], str) for a in result["answers"])


def test_a_run_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ftf train"):
        evaluate(tmp_path, EvalConfig())
