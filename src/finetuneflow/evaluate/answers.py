"""One question set through both models (and, with a memory, both models with memories in the
prompt): greedy answers, their scores, the reference answer's NLL, and (when asked) the judge's grade.

A row of the result (``evaluation.json`` → ``sets.<name>.rows``)::

    {"id", "question", "reference", "source",
     "base":  {"answer", "em", "f1", "rouge_l", "contains", "nll", ["judge": {"verdict", "reason"}]},
     "tuned": {... the same ...},
     ["base_memory", "tuned_memory": {... the same ...},
      "memory": {"retrieved": [{"id", "source", "score", "kind", "chunk_id"}], "in_prompt", "dropped",
                 "prompt_tokens", "own_source": [ids], "leak": bool,
                 ["excluding_source": {... the same record, own source left out ...} | null]},
      ["excluding_source": {"base_memory", "tuned_memory": {... the same ...}}]]}

``excluding_source`` (the row's) holds the memory sides' answers asked again without the question's
own source; only questions whose recall held it have one (for the others, leaving it out changes
nothing: their memory answers stand for both).

The memory sides read the prompt :mod:`~finetuneflow.evaluate.with_memory` builds; their NLL is
measured within the model's whole context window (the memories make the prompt longer than the
run's training rows may be).

``nll`` is the mean cross-entropy per token of the *reference* answer (its end-of-turn included)
given the prompt, in nats: how likely each model finds the right answer, whatever it generated.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from finetuneflow.evaluate.config import EvalConfig
from finetuneflow.evaluate.judge import Judge
from finetuneflow.evaluate.sets import MEMORY_PEERS, SETS, SIDES, Question
from finetuneflow.evaluate.with_memory import Recall, Retrieve, memory_questions
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
    retrieve: Retrieve | None = None  # None: no memory sides


def answer_set(name: str, questions: list[Question], bench: Bench) -> list[dict[str, Any]]:
    """The rows of one set, in question order (see the module docstring)."""
    label = SETS.get(name, name)
    recalled, records, clean, wide = _with_memories(questions, bench, label)
    leaked = sorted(clean)
    again = [clean[i] for i in leaked]
    sides: dict[str, list[dict[str, Any]]] = {}
    with bench.tuned.base() as base_model:
        sides["base"] = _side(base_model, questions, bench, f"{label}: base model")
        if recalled is not None:
            sides |= _memory_side("base_memory", base_model, recalled, again, wide, f"{label}: base model")
    sides["tuned"] = _side(bench.tuned.model, questions, bench, f"{label}: tuned model")
    if recalled is not None:
        tuned = bench.tuned.model
        sides |= _memory_side("tuned_memory", tuned, recalled, again, wide, f"{label}: tuned model")
    rows = []
    for i, q in enumerate(questions):
        row: dict[str, Any] = {"id": q.id, "question": q.text, "reference": q.reference, "source": q.source}
        row |= {side: sides[side][i] for side in SIDES if side in sides}
        if records is not None:
            row["memory"] = records[i]
        if i in clean:  # asked again without its own source: the memory sides' other answers
            k = leaked.index(i)
            row["excluding_source"] = {side: sides[f"{side}/clean"][k] for side in MEMORY_PEERS}
        rows.append(row)
    if bench.judge is not None:
        _grade(rows, bench.judge, bench.emit, label)
    return rows


def _with_memories(
    questions: list[Question], bench: Bench, label: str
) -> tuple[list[Question] | None, list[dict[str, Any]] | None, dict[int, Question], Bench]:
    """The questions with recalled memories in their prompts, their records, those (by index)
    asked again without their own source (``memory_exclude_source``), and the bench that measures
    them (NLL within the whole context window); (None, None, {}, bench) without a memory.

    Raises:
        ValueError: ``max_new_tokens`` leaves too little of the model's context for a prompt.
    """
    if bench.retrieve is None:
        return None, None, {}, bench
    from finetuneflow.models.generate import context_window

    tokenizer = bench.tuned.tokenizer
    window = context_window(bench.tuned.model, tokenizer)
    budget = window - bench.cfg.max_new_tokens
    if budget < 16:
        raise ValueError(f"max_new_tokens ({bench.cfg.max_new_tokens}) leaves {budget} of the {window}-token "
                         "context for a prompt with memories; lower it")  # fmt: skip
    bench.emit("memory", message=f"{label}: recalling {bench.cfg.memories} memories per question")
    cfg = bench.cfg
    recall = Recall(bench.retrieve, cfg.memories, budget, cfg.memory_share, cfg.memory_exclude_source)
    recalled, records, clean = memory_questions(questions, recall, tokenizer)
    return recalled, records, clean, replace(bench, max_len=max(bench.max_len, window))


def _memory_side(
    side: str, model: Any, recalled: list[Question], again: list[Question], bench: Bench, what: str
) -> dict[str, list[dict[str, Any]]]:
    """A memory side's answers, and (``side/clean``) those of the questions asked again without
    their own source."""
    out = {side: _side(model, recalled, bench, f"{what} + memory")}
    out[f"{side}/clean"] = _side(model, again, bench, f"{what} + memory, own source out") if again else []
    return out


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
    done, total = 0, sum(side in row for row in rows for side in SIDES)
    for row in rows:
        for side in (s for s in SIDES if s in row):
            row[side]["judge"] = judge.grade(row["question"], row["reference"], row[side]["answer"])
            done += 1
            emit("judge", done, total, message=f"{label}: judge")
