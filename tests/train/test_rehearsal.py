"""Self-rehearsal: a knowledge run trains on the base model's own sampled answers to general prompts,
generated with the adapters off, kept in the run folder and read back on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.errors import ConfigError
from finetuneflow.evaluate.forgetting import paragraphs
from finetuneflow.evaluate.sets import general_questions, general_text
from finetuneflow.train import rehearsal
from finetuneflow.train.config import RecallSettings, TrainConfig
from finetuneflow.train.recall import guard_paragraphs

from .helpers import knowledge_dataset


def _cfg(tiny_model: Path, share: float, steps: int = 2) -> TrainConfig:
    return TrainConfig(
        base_model=str(tiny_model), goal="knowledge", max_len=256, max_steps=steps, precision="fp32",
        threads=1, learning_rate=1e-2, batch_size=2, grad_accum=1,
        recall=RecallSettings(every=steps, questions=2, max_new_tokens=4, rehearsal=share),
    )  # fmt: skip


def _file(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / rehearsal.FILE).read_text().splitlines()]


def test_the_prompts_share_nothing_with_the_texts_that_measure_forgetting() -> None:
    prompts = rehearsal.prompts()
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts)
    assert not any(p.startswith("#") for p in prompts)
    measured = " ".join(paragraphs(general_text()) + guard_paragraphs()).lower()
    asked = {q.prompt[-1]["content"].lower() for q in general_questions()}
    assert not any(p.lower() in measured or p.lower() in asked for p in prompts)


def test_sampled_replies_repeat_with_their_seed_and_differ_from_greedy(
    tiny_model: Path, tiny_tokenizer: Any
) -> None:
    from finetuneflow.models.generate import Sampling, generate_replies
    from finetuneflow.models.load import load_causal_lm

    model = load_causal_lm(tiny_model).eval()
    convs = [[{"role": "user", "content": p}] for p in rehearsal.prompts()[:3]]

    def sampled(seed: int) -> list[str]:
        return generate_replies(model, tiny_tokenizer, convs, 12, 2, Sampling(temperature=1.0, seed=seed))

    assert sampled(3) == sampled(3)
    assert sampled(3) != sampled(4)
    greedy = generate_replies(model, tiny_tokenizer, convs, 12, 2)
    assert greedy == generate_replies(model, tiny_tokenizer, convs, 12, 3)  # batching does not change them
    assert sampled(3) != greedy


def test_a_knowledge_run_trains_on_the_base_models_own_answers(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.models.load import load_causal_lm
    from finetuneflow.state import runs as rf
    from finetuneflow.train.step import train

    events: list[Any] = []
    run = tmp_path / "run"
    summary = train(knowledge_dataset(tmp_path / "ds"), run, _cfg(tiny_model, 0.5), events.append)
    assert summary["status"] == "finished"
    kept = _file(run)
    # round(12 x 0.5) = 6 prompts asked (an answer that ends at once is dropped), in the prompts' order
    assert 1 <= len(kept) <= 6
    assert all(
        r["source"] == "rehearsal" and r["messages"][0]["content"] in rehearsal.prompts() for r in kept
    )
    # what the base model itself samples with the run's seed: the adapters were off
    from transformers import AutoTokenizer

    base = load_causal_lm(tiny_model)
    again = rehearsal._generate(base, AutoTokenizer.from_pretrained(str(tiny_model)), 6, 42, "cpu", None)
    assert [r["messages"] for r in again] == [r["messages"] for r in kept]
    stats = rf.read_json(run / rf.MANIFEST)["data"]["train"]
    assert stats["rehearsal_examples"] == 6 and stats["rehearsal_rows"] >= 1  # cycled up to the share
    assert any(e.stage == "rehearsal" and "generating" in e.message for e in events)


def test_rehearsal_is_off_by_default_and_for_the_style_goal(tiny_model: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from finetuneflow.train.step import train

    assert RecallSettings().rehearsal == 0.0
    train(knowledge_dataset(tmp_path / "ds"), tmp_path / "a", _cfg(tiny_model, 0.0))
    style = replace(_cfg(tiny_model, 0.5), goal="style", recall=RecallSettings(rehearsal=0.5))
    train(tmp_path / "ds", tmp_path / "b", style)
    assert not (tmp_path / "a" / rehearsal.FILE).exists() and not (tmp_path / "b" / rehearsal.FILE).exists()


def test_kept_answers_are_read_back_not_generated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = [{"source": "rehearsal", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant",
             "content": a}]} for a in ("one", "two")]  # fmt: skip
    (tmp_path / rehearsal.FILE).write_text("".join(json.dumps(r) + "\n" for r in kept))

    def generate(*args: Any) -> list[dict[str, Any]]:
        raise AssertionError("a resumed run must train on the answers it started with")

    monkeypatch.setattr(rehearsal, "_generate", generate)
    got = rehearsal.records(None, None, 5, 0, "cpu", None, tmp_path)
    assert [r["messages"][1]["content"] for r in got] == ["one", "two", "one", "two", "one"]
    assert len({r["id"] for r in got}) == 5


def test_starting_over_in_a_folder_generates_afresh(tiny_model: Path, tmp_path: Path) -> None:
    from finetuneflow.train.step import train

    run = tmp_path / "run"
    run.mkdir()
    stale = {
        "source": "rehearsal",
        "messages": [{"role": "user", "content": "old"}, {"role": "assistant", "content": "x"}],
    }
    (run / rehearsal.FILE).write_text(json.dumps(stale) + "\n")
    train(knowledge_dataset(tmp_path / "ds"), run, _cfg(tiny_model, 0.25))
    assert all(r["messages"][0]["content"] != "old" for r in _file(run))


def test_the_share_is_validated() -> None:
    from finetuneflow.config import from_dict

    with pytest.raises(
        ConfigError, match=r"recall\.rehearsal: 1\.5 is not in \[0, 1\]; try 0 \(off\) or 0\.3"
    ):
        from_dict(TrainConfig, {"recall": {"rehearsal": 1.5}})


def test_a_trained_adapter_is_off_while_the_answers_are_generated(
    tiny_model: Path, tiny_tuned_run: Path
) -> None:
    from finetuneflow.models.load import load_causal_lm, load_tuned

    tuned = load_tuned(tiny_tuned_run)
    base = load_causal_lm(tiny_model)
    with_adapter = rehearsal._generate(tuned.model, tuned.tokenizer, 4, 7, "cpu", None)
    assert with_adapter == rehearsal._generate(base, tuned.tokenizer, 4, 7, "cpu", None)
    from finetuneflow.models.generate import DECODE_BATCH, Sampling, generate_replies

    convs = [[{"role": "user", "content": p}] for p in rehearsal.prompts()[:4]]
    adapted = generate_replies(
        tuned.model, tuned.tokenizer, convs, 160, DECODE_BATCH, Sampling(temperature=1.0, seed=7)
    )
    assert adapted != [r["messages"][1]["content"] for r in with_adapter]  # the adapter does change them
