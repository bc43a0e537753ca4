"""Checks on generated examples: shape, grounding in the source chunk, judge scores, duplicates.

Every check says keep or drop-with-reason; the caller counts and records each drop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from finetuneflow.dataset.prompts import RUBRIC
from finetuneflow.records import Message
from finetuneflow.text.dedup import DedupConfig, exact_key, near_duplicates, signatures

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that carry no fact: an answer made only of them is neither grounded nor ungrounded.
_STOP = frozenset(
    "the a an and or but if then else of to in on at by for with from as is are was were be been being "
    "it its this that these those there here which who whom whose what when where why how not no yes "
    "can could should would will shall may might must do does did done have has had you your we our "
    "they their them he she his her i me my so such than too very also just only into over under about "
    "more most less least any all each every both either neither some many much other another one".split()
)
MIN_QUESTION_CHARS = 8
MIN_ANSWER_CHARS = 2


@dataclass
class Pair:
    """A generated question and answer, with an optional follow-up turn."""

    question: str
    answer: str
    follow_up: str = ""
    follow_up_answer: str = ""
    paraphrases: tuple[str, ...] = ()  # other wordings of the question (same answer, same fact)
    variants: tuple[str, ...] = ()  # other wordings of the answer (same facts, same fact group)

    @property
    def grouped(self) -> bool:
        """Whether the pair has other wordings: its examples then share a ``fact`` id."""
        return bool(self.paraphrases or self.variants)

    def wordings(self) -> list[Pair]:
        """One pair per wording: questions (the original, then its paraphrases) and answers (the
        original, then its variants) paired round-robin, as many pairs as the longer list, so every
        wording is trained on without multiplying the two counts."""
        questions, answers = (self.question, *self.paraphrases), (self.answer, *self.variants)
        return [
            Pair(
                questions[i % len(questions)],
                answers[i % len(answers)],
                self.follow_up,
                self.follow_up_answer,
            )
            for i in range(max(len(questions), len(answers)))
        ]

    def messages(self, system: str = "") -> list[Message]:
        out: list[Message] = [{"role": "system", "content": system}] if system else []
        out += [{"role": "user", "content": self.question}, {"role": "assistant", "content": self.answer}]
        if self.follow_up and self.follow_up_answer:
            out += [
                {"role": "user", "content": self.follow_up},
                {"role": "assistant", "content": self.follow_up_answer},
            ]
        return out

    def answer_text(self) -> str:
        return f"{self.answer} {self.follow_up_answer}".strip()


def validate_pairs(value: Any) -> tuple[list[Pair], list[str]]:
    """Pairs from parsed model output ``{"examples": [...]}`` (a bare list is accepted too), and
    one reason per item that is not a usable pair."""
    items = value.get("examples") if isinstance(value, dict) else value
    if not isinstance(items, list):
        return [], ['no "examples" list in the output']
    if not items:  # a chunk that silently gave nothing would leave no trace in the rejections
        return [], ['the "examples" list in the output is empty']
    pairs: list[Pair] = []
    problems: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            problems.append("an example is not an object")
            continue
        q, a = _text(item.get("question")), _text(item.get("answer"))
        if len(q) < MIN_QUESTION_CHARS:
            problems.append("question missing or too short")
        elif len(a) < MIN_ANSWER_CHARS:
            problems.append("answer missing or empty")
        else:
            pairs.append(
                Pair(
                    q,
                    a,
                    _text(item.get("follow_up")),
                    _text(item.get("follow_up_answer")),
                    _distinct(item.get("paraphrases"), q, MIN_QUESTION_CHARS),
                    _distinct(item.get("answer_variants"), a, MIN_ANSWER_CHARS),
                )
            )
    return pairs, problems


def _distinct(raw: Any, original: str, min_chars: int) -> tuple[str, ...]:
    """The usable, distinct rewordings of ``original`` in ``raw`` (a list; too short, repeated or
    non-string ones left out): a question's paraphrases or an answer's variants."""
    seen = {exact_key(original)}
    out: list[str] = []
    for text in raw if isinstance(raw, list) else []:
        t = _text(text)
        if len(t) >= min_chars and exact_key(t) not in seen:
            seen.add(exact_key(t))
            out.append(t)
    return tuple(out)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def content_words(text: str) -> set[str]:
    """Lower-cased words and numbers that carry meaning (no stop words, no one-letter words)."""
    return {w for w in (m.group().casefold() for m in _WORD.finditer(text)) if len(w) > 1 and w not in _STOP}


def grounding(answer: str, source: str) -> float:
    """Share of the answer's content words that occur in the source (1.0 when it has none).

    A cheap, language-independent guard against answers the model made up: numbers and names that
    are not in the chunk lower the score. Word stems are matched by their first five letters, so
    'configure' in the source supports 'configured' in the answer.
    """
    words = content_words(answer)
    if not words:
        return 1.0
    seen = content_words(source)
    stems = {w[:5] for w in seen if not w.isdigit()}
    found = sum(1 for w in words if w in seen or (not w.isdigit() and w[:5] in stems))
    return found / len(words)


def judge_scores(value: Any, count: int) -> list[float | None]:
    """Mean rubric score (1-10) per pair from the judge's JSON; None where it gave none."""
    out: list[float | None] = [None] * count
    items = value.get("scores") if isinstance(value, dict) else value
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            continue
        marks = [item.get(k) for k in RUBRIC]
        if 0 <= item["index"] < count and all(isinstance(m, int | float) for m in marks):
            out[item["index"]] = sum(float(m) for m in marks if m is not None) / len(RUBRIC)
    return out


def example_key(messages: list[Message]) -> str:
    """Exact-duplicate key of a conversation: its normalized user and assistant texts."""
    return exact_key("\n".join(m["content"] for m in messages if m["role"] != "system"))


def dedup_rows(
    rows: list[dict[str, Any]], cfg: DedupConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drop exact duplicate conversations, then near-duplicate first questions (MinHash over
    character shingles, as ingest does). The earlier row wins. Rows of one ``fact`` group are
    intended paraphrases of one question: they are never near-duplicates of each other (an exact
    repeat still is). Returns (kept, rejected) where a rejected row carries ``reason`` and
    ``duplicate_of`` (the kept row's id)."""
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    first_by_key: dict[str, str] = {}
    for row in rows:
        key = example_key(row["messages"])
        if key in first_by_key:
            rejected.append({**row, "reason": "exact duplicate example", "duplicate_of": first_by_key[key]})
        else:
            first_by_key[key] = row["id"]
            kept.append(row)
    questions = [_first_user(row["messages"]) for row in kept]
    if len(questions) < 2:
        return kept, rejected
    matches = near_duplicates(signatures(questions, cfg), cfg)
    out = []
    for row, match in zip(kept, matches, strict=True):
        if match is None or (row.get("fact") and row.get("fact") == kept[match].get("fact")):
            out.append(row)
        else:
            rejected.append({**row, "reason": "near-duplicate question", "duplicate_of": kept[match]["id"]})
    return out, rejected


def _first_user(messages: list[Message]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")
