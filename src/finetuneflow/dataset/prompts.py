"""The prompts the generator sends, and the JSON shapes it asks for.

Small local models follow short, concrete instructions best: one task, the output shape shown as a
schema and an example, and the source text fenced off so it is not mistaken for instructions.
"""

from __future__ import annotations

import json
from typing import Any

from finetuneflow.records import Message

STYLES = {
    "factual": "a factual question answered by a specific detail of the text",
    "how-to": "a how-to question whose answer gives the steps or procedure",
    "why": "a why-question whose answer gives the reason or cause",
    "compare": "a question comparing two things the text mentions, with the difference",
    "summarise": "a request to summarise part of the text, answered with a short summary",
}
AUDIENCES = ("a newcomer", "a practitioner", "an expert")

EXAMPLES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "examples": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "question": {"type": "string"},
                    "answer": {"type": "string"},
                    "follow_up": {"type": "string"},
                    "follow_up_answer": {"type": "string"},
                    "paraphrases": {"type": "array", "items": {"type": "string"}},
                    "answer_variants": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["question", "answer"],
            },
        }
    },
    "required": ["examples"],
}

SCORES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "scores": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "accuracy": {"type": "integer"},
                    "relevance": {"type": "integer"},
                    "clarity": {"type": "integer"},
                    "usefulness": {"type": "integer"},
                },
                "required": ["index", "accuracy", "relevance", "clarity", "usefulness"],
            },
        }
    },
    "required": ["scores"],
}
RUBRIC = ("accuracy", "relevance", "clarity", "usefulness")


def styles_for(seed: int, n: int) -> list[str]:
    """``n`` question styles, rotated by ``seed`` so a corpus gets every style evenly."""
    names = list(STYLES)
    return [names[(seed + i) % len(names)] for i in range(n)]


def generation_messages(
    text: str, n: int, seed: int, follow_up: bool, language_hint: str = "", paraphrases: int = 0,
    answer_variants: int = 0,
) -> list[Message]:  # fmt: skip
    """Ask for ``n`` question/answer pairs grounded in ``text``, in varied styles and audiences,
    each with ``paraphrases`` other wordings of its question and ``answer_variants`` of its answer."""
    wanted = "\n".join(
        f"{i + 1}. {STYLES[style]}, asked by {AUDIENCES[(seed + i) % len(AUDIENCES)]}"
        for i, style in enumerate(styles_for(seed, n))
    )
    turn = (
        ' Each example also has "follow_up" (a natural next question from the same person) and '
        '"follow_up_answer" (answered from the text).'
        if follow_up
        else ""
    )
    if paraphrases:
        turn += (
            f' Each example also has "paraphrases": {paraphrases} other ways a person might ask the same '
            "question, in different words (same meaning, same answer)."
        )
    if answer_variants:
        turn += (
            f' Each example also has "answer_variants": {answer_variants} other ways to write the same '
            "answer, in different words (the same facts from the text, nothing added or left out)."
        )
    shape: dict[str, Any] = {"examples": [{"question": "...", "answer": "..."}]}
    if paraphrases:
        shape["examples"][0]["paraphrases"] = ["..."] * paraphrases
    if answer_variants:
        shape["examples"][0]["answer_variants"] = ["..."] * answer_variants
    system = (
        "You write training data for a question-answering assistant. You only use facts stated in "
        "the source text; you never invent names, numbers or steps."
    )
    user = (
        f"Write {n} question/answer pairs about the source text below, one of each kind:\n{wanted}\n\n"
        "Rules: questions must make sense without seeing the text (never say 'the text' or 'the "
        "passage'); answers are complete sentences that use only facts from the text; no two "
        f"questions ask the same thing.{turn}{language_hint}\n\n"
        f"Reply with JSON only, exactly this shape: {json.dumps(shape)}\n\n"
        f"<source>\n{text}\n</source>"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def repair_messages(bad_output: str, problem: str) -> list[Message]:
    """Ask the model to turn its own malformed answer into the JSON shape (one attempt)."""
    shape = {"examples": [{"question": "...", "answer": "..."}]}
    user = (
        f"This output should be JSON of the shape {json.dumps(shape)} but is not ({problem}).\n"
        "Rewrite it as valid JSON of that shape, keeping its questions and answers unchanged (and any "
        '"paraphrases" and "answer_variants" lists of an example, as they are). '
        f"Reply with the JSON only.\n\n<output>\n{bad_output[:6000]}\n</output>"
    )
    return [{"role": "user", "content": user}]


def judge_messages(text: str, pairs: list[tuple[str, str]]) -> list[Message]:
    """Ask for a 1-10 score per rubric item for each pair, judged against the source text."""
    listed = "\n".join(f"[{i}] Q: {q}\n    A: {a}" for i, (q, a) in enumerate(pairs))
    user = (
        "Score each question/answer pair from 1 (bad) to 10 (excellent) on: accuracy (the answer "
        "is correct according to the source text), relevance (it is about the text's subject), "
        "clarity (clear and self-contained), usefulness (worth learning).\n\n"
        f"<source>\n{text}\n</source>\n\n<pairs>\n{listed}\n</pairs>\n\n"
        'Reply with JSON only: {"scores": [{"index": 0, "accuracy": 9, "relevance": 8, '
        '"clarity": 9, "usefulness": 7}, ...]} with one entry per pair.'
    )
    return [{"role": "user", "content": user}]
