"""One question set through both models: greedy answers, their scores, the reference answer's NLL,
and (when asked) the judge's grade.

A row of the result (``evaluation.json`` → ``sets.<name>.rows``)::

    {"id", "question", "reference", "source",
     "base":  {"answer", "em", "f1", "rouge_l", "contains", "nll", ["judge": {"verdict", "reason"}]},
     "tuned": {... the same ...}}

``nll`` is the mean cross-entropy per token of the *reference* answer (its end-of-turn included)
given the prompt, in nats: how likely each model finds the right answer, whatever it generated.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from finetuneflow.evaluate.config import EvalConfig
from finetuneflow.evaluate.judge import Judge
from finetuneflow.evaluate.sets import SETS, Question
from finetuneflow.events import Emitter
from finetuneflow.models.chat import encode_chat, pack, pad_id
from finetuneflow.models.generate import generate_replies
from finetuneflow.models.load import Tuned
from finetuneflow.models.loss import rows_to_tensors, summed_loss
from finetuneflow.text.scores import best_score


@dataclass
class Bench:
    """What answering needs besides the questions: the models, the settings, the run's row length
    and precision, the judge (or None) and where progress goes."""

    tuned: Tuned
    cfg: EvalConfig
    max_len: int
    amp: Callable[[], AbstractContextManager[Any]]
    judge: Judge | None
    emit: Emitter


def answer_set(name: str, questions: list[Question], bench: Bench) -> list[dict[str, Any]]:
    """The rows of one set, in question order (see the module docstring)."""
    label = SETS.get(name, name)
    with bench.tuned.base() as base_model:
        base = _side(base_model, questions, bench, f"{label}: base model")
    tuned = _side(bench.tuned.model, questions, bench, f"{label}: tuned model")
    rows = [
        {"id": q.id, "question": q.text, "reference": q.reference, "source": q.source, "base": b, "tuned": t}
        for q, b, t in zip(questions, base, tuned, strict=True)
    ]
    if bench.judge is not None:
        _grade(rows, bench.judge, bench.emit, label)
    return rows


def _side(model: Any, questions: list[Question], bench: Bench, what: str) -> list[dict[str, Any]]:
    """One model's answers, scores and reference NLL for every question."""
    tokenizer, cfg = bench.tuned.tokenizer, bench.cfg
    bench.emit("answers", 0, len(questions), message=what)
    answers: list[str] = []
    for start in range(0, len(questions), cfg.gen_batch):
        batch = [q.prompt for q in questions[start : start + cfg.gen_batch]]
        answers += generate_replies(model, tokenizer, batch, cfg.max_new_tokens, cfg.gen_batch)
        bench.emit("answers", len(answers), len(questions), message=what)
    out = []
    for q, answer in zip(questions, answers, strict=True):
        nll = answer_nll(model, tokenizer, q, bench.max_len, bench.tuned.device, bench.amp)
        out.append({"answer": answer, **best_score(answer, q.references), "nll": nll})
    return out


def answer_nll(
    model: Any,
    tokenizer: Any,
    question: Question,
    max_len: int,
    device: str,
    amp: Callable[[], AbstractContextManager[Any]],
) -> float | None:
    """Mean loss per token of ``question.reference`` given its prompt (None when truncation at
    ``max_len`` leaves no answer token)."""
    import torch

    messages = [*question.prompt, {"role": "assistant", "content": question.reference}]
    encoded = encode_chat(tokenizer, messages, max_len)
    if encoded.n_supervised == 0:
        return None
    (row,) = pack([encoded], len(encoded.input_ids), pad_id(tokenizer))  # one row, no padding
    with torch.no_grad(), amp():
        total, n = summed_loss(model, rows_to_tensors([row], device))
    return float(total) / n


def _grade(rows: list[dict[str, Any]], judge: Judge, emit: Emitter, label: str) -> None:
    done = 0
    for row in rows:
        for side in ("base", "tuned"):
            row[side]["judge"] = judge.grade(row["question"], row["reference"], row[side]["answer"])
            done += 1
            emit("judge", done, 2 * len(rows), message=f"{label}: judge")
