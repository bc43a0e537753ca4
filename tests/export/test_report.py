"""The report leads with answer quality: one sentence saying better / the same / worse, the means per
question set, the forgetting check, then a table per set of every question with both answers and their
scores. Evaluation results are built by hand (through the step's own summary) for each case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.evaluate.summary import summarise
from finetuneflow.export.report import write_report
from finetuneflow.state import runs as rf

LOSSES = {  # the tuned loss is lower in every case: the answers decide the verdict, not the loss
    "chat": {
        "examples": 8, "supervised_tokens": 400, "base_loss": 3.95, "tuned_loss": 2.96,
        "base_perplexity": 51.9, "tuned_perplexity": 19.3, "improvement": 0.2506,
    }
}  # fmt: skip


def side(answer: str, f1: float, nll: float = 3.0, judge: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"answer": answer, "em": float(f1 == 1), "f1": f1, "rouge_l": f1, "contains": 0.0}
    out["nll"] = nll
    if judge:
        out["judge"] = {"verdict": judge, "reason": "because"}
    return out


def rows(base: list[float], tuned: list[float], judged: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "id": str(i), "question": f"What does E{i} mean?", "reference": f"Heater fault {i}.",
            "source": "t",
            "base": side(f"base says {i}", b, 3.0, "wrong" if judged else None),
            "tuned": side(f"tuned says {i} | piped", t, 2.0, "correct" if judged else None),
        }
        for i, (b, t) in enumerate(zip(base, tuned, strict=True))
    ]  # fmt: skip


def evaluation(base: list[float], tuned: list[float], judged: bool = False) -> dict[str, Any]:
    general = [
        {
            "id": "g-france", "question": "What is the capital of France?", "reference": "Paris",
            "source": "general",
            "base": {**side("Paris.", 1.0), "contains": 1.0},
            "tuned": {**side("Lyon.", 0.0), "contains": 0.0},
        }
    ]  # fmt: skip
    half = len(base) // 2
    sets = {
        "eval": rows(base[:half], tuned[:half], judged),
        "heldout": rows(base[half:], tuned[half:], judged),
        "recall": rows([0.2] * 3, [0.9] * 3),
        "general": general,
    }
    forgetting = {"base_perplexity": 10.0, "tuned_perplexity": 10.5, "change": 0.05}
    summary = summarise(sets, resamples=500, seed=0, confidence=0.95)
    return {"format": 2, "config": {}, **summary, "forgetting": forgetting, "losses": LOSSES, "judge": None}


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run (the copy takes the hand-made evaluation.json)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def report(run: Path, tmp_path: Path, result: dict[str, Any]) -> str:
    (run / rf.EVALUATION).write_text(json.dumps(result))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    write_report(run, out, {})
    return (out / "report.md").read_text()


def result_section(text: str) -> str:
    return text.split("## Result\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    ("base", "tuned", "word"),
    [
        ([0.1, 0.2, 0.1, 0.0, 0.2, 0.1], [0.6, 0.7, 0.5, 0.6, 0.8, 0.6], "**better** than the base model"),
        ([0.3, 0.2, 0.4, 0.3, 0.2, 0.4], [0.4, 0.1, 0.4, 0.2, 0.3, 0.4], "**the same** as the base model"),
        ([0.6, 0.7, 0.5, 0.6, 0.8, 0.6], [0.1, 0.2, 0.1, 0.0, 0.2, 0.1], "**worse** than the base model"),
    ],
)
def test_the_report_leads_with_one_plain_sentence(
    run: Path, tmp_path: Path, base: list[float], tuned: list[float], word: str
) -> None:
    text = report(run, tmp_path, evaluation(base, tuned))
    lead = result_section(text).strip().splitlines()[0]
    assert lead.startswith("On 6 questions it was not trained on, the tuned model answers ") and word in lead
    b, t = sum(base) / 6, sum(tuned) / 6
    assert f"token F1 {b:.2f} → {t:.2f}" in lead
    # the loss comes after the answers, and never decides alone
    assert text.index(lead) < text.index("Loss: the tuned model's eval loss") < text.index("## Training")


def test_the_per_set_means_and_the_forgetting_check_follow(run: Path, tmp_path: Path) -> None:
    section = result_section(report(run, tmp_path, evaluation([0.1] * 6, [0.6] * 6)))
    assert "| eval split | 3 | 0.10 → 0.60 |" in section
    assert "| recall probe (training questions) | 3 | 0.20 → 0.90 |" in section
    assert "| general questions (forgetting check) | 1 | 1.00 → 0.00 |" in section
    assert "perplexity on general text 10.00 → 10.50 (+5.0%)" in section
    assert "general questions answered 1/1 → 0/1" in section
    assert "bootstrap" in section  # the rule is stated where the verdict is


def test_every_question_is_a_row_with_both_answers_and_scores(run: Path, tmp_path: Path) -> None:
    text = report(run, tmp_path, evaluation([0.1] * 6, [0.6] * 6))
    answers = text.split("## Answers per question", 1)[1].split("\n## ", 1)[0]
    assert (
        answers.index("### Eval split: 3 questions")
        < answers.index("### Held-out")
        < answers.index("### Recall")
    )
    row = "| 1 | What does E0 mean? | Heater fault 0. | base says 0 | tuned says 0 \\| piped | 0.10 → 0.60 |"
    assert row in answers  # a pipe inside an answer cannot break the table
    assert "| 1 | What is the capital of France? | Paris | Paris. | Lyon. | 1.00 → 0.00 |" in answers
    assert text.index("## Answers per question") < text.index("## Training")


def test_judge_grades_show_when_there_are_some(run: Path, tmp_path: Path) -> None:
    text = report(run, tmp_path, evaluation([0.1] * 6, [0.6] * 6, judged=True))
    assert "| 0.00 → 1.00 |" in result_section(text)  # judge score: wrong -> correct
    assert "| 0.10 → 0.60 | 0.10 → 0.60 | 0.00 → 0.00 | wrong → correct |" in text


def test_an_evaluation_without_scored_answers_says_so(run: Path, tmp_path: Path) -> None:
    text = report(run, tmp_path, {"losses": LOSSES, "answers": []})  # written by an older version
    assert "Answers were not scored" in result_section(text) and "Loss:" in result_section(text)


def memory_evaluation() -> dict[str, Any]:
    """Six eval-split questions answered by base, tuned, base+memory and tuned+memory."""
    out = []
    for i, r in enumerate(rows([0.1] * 6, [0.2] * 6)):
        r["base_memory"] = side(f"base with memory {i}", 0.7)
        r["tuned_memory"] = side(f"tuned with memory {i}", 0.2)
        recalled = [
            {"id": 4, "source": "manual.md", "score": 0.8, "kind": "document"},
            {"id": 9, "source": None},
        ]
        r["memory"] = {"retrieved": recalled, "in_prompt": [4], "dropped": [9], "prompt_tokens": 80}
        out.append(r)
    summary = summarise({"eval": out}, resamples=500, seed=0, confidence=0.95)
    return {"format": 2, "config": {}, **summary, "forgetting": None, "losses": LOSSES, "judge": None}


def test_with_memory_the_tables_have_four_columns_and_the_memory_verdicts(run: Path, tmp_path: Path) -> None:
    text = report(run, tmp_path, memory_evaluation())
    section = result_section(text)
    assert "the base model with memories in its prompt answers **better** than without them" in section
    assert "the tuned model with memories in its prompt answers **the same** as without them" in section
    assert "The memory does not help here." in section
    assert "| eval split: base → base+memory | 6 | 0.10 → 0.70 |" in section
    assert "| eval split: tuned → tuned+memory | 6 | 0.20 → 0.20 |" in section
    answers = text.split("## Answers per question", 1)[1].split("\n## ", 1)[0]
    head = (
        "| # | question | reference | base answer | tuned answer | base+memory answer | "
        "tuned+memory answer | F1 base / tuned / base+memory / tuned+memory | ROUGE-L | EM | "
        "memories recalled |"
    )
    assert head in answers
    row = (
        "| 1 | What does E0 mean? | Heater fault 0. | base says 0 | tuned says 0 \\| piped | "
        "base with memory 0 | tuned with memory 0 | 0.10 / 0.20 / 0.70 / 0.20 | 0.10 → 0.20 | 0.00 → 0.00 | "
        "#4 (manual.md); #9 [did not fit] |"
    )
    assert row in answers


def test_without_memory_the_tables_keep_two_columns(run: Path, tmp_path: Path) -> None:
    text = report(run, tmp_path, evaluation([0.1] * 6, [0.6] * 6))
    assert "base+memory" not in text and "memories recalled" not in text and "The memory" not in text
