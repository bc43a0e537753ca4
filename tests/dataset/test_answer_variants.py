"""Answer variants (``answer_variants``): other wordings of each answer, asked with the questions'
paraphrases, through the same path as every generated pair: parsed (and repaired), grounded one by
one (an ungrounded variant is rejected with its reason, the pair kept), stored as examples of the
pair's ``fact`` group, kept by the build's near-duplicate filter and split as one group. Over real
HTTP with the scripted server and the quickstart documents."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedServer

from dataset.teacher import teacher
from finetuneflow import api
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.dataset.generate import GenerateConfig
from finetuneflow.dataset.presets import ProviderConfig
from finetuneflow.dataset.prompts import generation_messages
from finetuneflow.dataset.quality import Pair, validate_pairs
from finetuneflow.ingest.config import IngestConfig

DATA = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "data"
MADE_UP = "Zebras juggle quantum marmalade every Tuesday."  # nothing of it is in any chunk


def varied_teacher(body: dict[str, Any]) -> Reply:
    """The teacher's pairs, each with two paraphrases and two answer variants: one grounded (the
    answer reworded with the chunk's own words), one made up."""
    reply = teacher(body)
    try:
        value = json.loads(reply.content)
    except json.JSONDecodeError:
        return reply
    for item in value.get("examples", []) if isinstance(value, dict) else []:
        if "question" in item and "answer" in item:
            q, a = item["question"], item["answer"]
            item["paraphrases"] = [f"Put differently, {q[0].lower()}{q[1:]}", f"Tell me: {q}"]
            item["answer_variants"] = [f"In short, {a[0].lower()}{a[1:]}", MADE_UP]
    return Reply(json.dumps(value))


@pytest.fixture
def generated(tiny_model: Path, ftf_home: Path) -> dict[str, Any]:
    api.ingest([DATA], "var", IngestConfig(tokenizer=str(tiny_model), max_tokens=96, overlap=8, workers=1))
    gen = GenerateConfig(max_chunks=8, paraphrases=2, answer_variants=2)
    with ScriptedServer(varied_teacher) as srv:
        cfg = ProviderConfig(preset="custom", base_url=srv.url, model="test-model", backoff_s=0.0)
        out = api.generate_dataset("var", cfg, gen, DatasetConfig(eval_fraction=0.3, heldout_fraction=0.3))
        prompts = [r.body["messages"][-1]["content"] for r in srv.chat_requests]
    return {**out, "prompts": prompts, "dir": ftf_home / "projects" / "var" / "datasets" / "default"}


def test_the_prompt_asks_for_answer_variants_only_when_set() -> None:
    asked = generation_messages("Some text.", 2, 0, False, answer_variants=2)[-1]["content"]
    assert '"answer_variants": ["...", "..."]' in asked and "2 other ways to write the same answer" in asked
    assert "answer_variants" not in generation_messages("Some text.", 2, 0, False)[-1]["content"]
    assert "answer_variants: must be 0..3" in GenerateConfig(answer_variants=4).problems()


def test_wordings_pair_questions_and_answers_round_robin() -> None:
    (pair,), _ = validate_pairs(
        {"examples": [{"question": "What does E21 mean?", "answer": "The heater tripped.",
                       "paraphrases": ["Which fault is E21?", "E21 means what?"],
                       "answer_variants": ["The heater cut out.", "the heater TRIPPED.", "", 3]}]}
    )  # fmt: skip
    assert pair.variants == ("The heater cut out.",)  # the repeat, the empty and the non-string left out
    assert [(w.question, w.answer) for w in pair.wordings()] == [
        ("What does E21 mean?", "The heater tripped."),
        ("Which fault is E21?", "The heater cut out."),
        ("E21 means what?", "The heater tripped."),
    ]
    only_answers = Pair("What does E21 mean?", "The heater tripped.", variants=("It cut out.", "Overheat."))
    assert [w.question for w in only_answers.wordings()] == ["What does E21 mean?"] * 3
    assert only_answers.grouped and not Pair("Q?", "A.").grouped


def test_grounded_variants_become_examples_of_one_fact_and_survive_the_build(
    generated: dict[str, Any],
) -> None:
    assert all('"answer_variants"' in p for p in generated["prompts"] if "<source>" in p)
    report = generated["generation"].to_json()
    kept = report["kept"]
    assert kept > 3
    # every made-up variant is rejected with its reason; the pairs themselves are kept
    assert report["rejected"] == {"grounding: answer variant not grounded in the chunk": kept}
    rows = [
        json.loads(line)
        for split in ("train", "eval", "heldout")
        for line in (generated["dir"] / "chat" / f"{split}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    generated_rows = [r for r in rows if r.get("fact")]
    by_fact: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in generated_rows:
        by_fact[r["fact"]].append(r)
    assert len(by_fact) == kept
    # 3 questions x 2 answers (original + the grounded variant), round-robin: 3 examples per fact,
    # none lost to the near-duplicate filter although the questions are near-copies of each other
    assert all(len(group) == 3 for group in by_fact.values())
    for group in by_fact.values():
        answers = Counter(r["messages"][-1]["content"] for r in group)
        (original, twice), (variant, once) = answers.most_common()
        assert (twice, once) == (2, 1) and variant.startswith("In short, ") and MADE_UP not in answers
        assert len({r["messages"][-2]["content"] for r in group}) == 3  # every question wording
    split_of = {
        r["id"]: split
        for split in ("train", "eval", "heldout")
        for line in (generated["dir"] / "chat" / f"{split}.jsonl").read_text().splitlines()
        if line.strip()
        for r in [json.loads(line)]
    }
    assert all(len({split_of[r["id"]] for r in group}) == 1 for group in by_fact.values())
    rejected = [json.loads(line) for line in (generated["dir"] / "rejected.jsonl").read_text().splitlines()]
    assert not [r for r in rejected if r.get("stage") == "dedup" and r.get("fact")]
