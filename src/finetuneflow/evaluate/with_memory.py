"""Questions asked with the project's memory in the prompt, built exactly as ``ftf chat`` builds it.

The step never touches the memory itself: whoever calls it passes a ``retrieve(question) -> items``
function (the api layer binds it to ``api.recall``). For each question the recalled items go through
:func:`finetuneflow.models.context.fit_prompt`, the function chat and the server use, with the
question's own system message and earlier turns. What was recalled, and which items made it into the
prompt, is recorded per question (``rows[i]["memory"]``) so a reader can check for leakage: an item
that holds the reference answer itself shows up there with its id and source.

Leakage is also flagged: an item recalled from the question's **own source** (the memory item made
from the ingested chunk the question was written from: same ``chunk_id``; for a Q&A row, the row
itself) makes the answer open book. ``own_source`` lists such items, ``leak`` says whether one made it
into the prompt. With ``exclude_source`` the question is also fitted without them
(``excluding_source``: the next best items take their place), so the memory columns can be scored
both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from finetuneflow.evaluate.sets import Question
from finetuneflow.models.context import fit_prompt
from finetuneflow.records import Message

Retrieve = Callable[[str], list[dict[str, Any]]]
"""Memory items for a question, best first: ``id``, ``text``, ``source``, ``score`` (at least ``text``)."""
RECORDED = ("id", "source", "score", "kind", "chunk_id")  # what a row keeps of each recalled item


def split_prompt(prompt: Sequence[Message]) -> tuple[str | None, list[tuple[str, str]], str]:
    """A question's conversation as ``fit_prompt`` takes it: system text (or None), earlier
    (user, assistant) turns, and the question.

    Raises:
        ValueError: the conversation is not an optional system message then alternating user and
            assistant turns ending with the user's question.
    """
    system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else None
    rest = list(prompt[1:] if system is not None else prompt)
    roles = [m["role"] for m in rest]
    if not rest or roles != ["user", "assistant"] * (len(rest) // 2) + ["user"]:
        raise ValueError(
            f"cannot add memories to a conversation with roles {roles}: it must end with a user turn"
        )
    turns = [(rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest) - 1, 2)]
    return system, turns, rest[-1]["content"]


def own_source(question: Question, item: dict[str, Any]) -> bool:
    """Whether ``item`` was made from the chunk ``question`` was written from (both known)."""
    return question.chunk_id is not None and item.get("chunk_id") == question.chunk_id


def with_memory(
    question: Question, notes: Sequence[dict[str, Any]], tokenizer: Any, budget: int, share: float
) -> tuple[Question, dict[str, Any]]:
    """``question`` with ``notes`` in its system prompt (as chat fits them into ``budget`` tokens),
    and the record of what was recalled: ``{"retrieved": [{id, source, score, kind, chunk_id}],
    "in_prompt": [ids], "dropped": [ids], "prompt_tokens", "own_source": [ids], "leak": bool}``."""
    from finetuneflow.models.generate import count_prompt_tokens

    system, turns, text = split_prompt(question.prompt)
    count = partial(count_prompt_tokens, tokenizer)
    fitted = fit_prompt(count, budget, text, turns, notes, system, share)
    in_prompt = [n.get("id") for n in fitted.notes]
    own = [n.get("id") for n in notes if own_source(question, n)]
    record = {
        "retrieved": [{k: n.get(k) for k in RECORDED} for n in notes],
        "in_prompt": in_prompt,
        "dropped": list(fitted.dropped_notes),
        "prompt_tokens": fitted.tokens,
        "own_source": own,
        "leak": any(i in in_prompt for i in own),
    }
    return replace(question, prompt=fitted.messages), record


@dataclass(frozen=True)
class Recall:
    """How each question recalls: ``k`` items from ``retrieve`` (which may give more: the spares
    replace own-source items when ``exclude_source`` is on), fitted into ``budget`` tokens with
    memories filling at most ``share`` of the free room."""

    retrieve: Retrieve
    k: int
    budget: int
    share: float
    exclude_source: bool = False


def memory_questions(
    questions: Sequence[Question], recall: Recall, tokenizer: Any
) -> tuple[list[Question], list[dict[str, Any]], dict[int, Question]]:
    """Every question with its memories in the prompt, each one's record (see :func:`with_memory`),
    and, with ``recall.exclude_source``, the questions (by index) whose recall held an item from
    their own source, fitted again without it. Their records get ``excluding_source`` (the record
    of that prompt); the other questions' ``excluding_source`` is None (the prompt is the same)."""
    asked, records, clean = [], [], {}
    for i, q in enumerate(questions):
        items = recall.retrieve(q.text)
        fitted, record = with_memory(q, items[: recall.k], tokenizer, recall.budget, recall.share)
        if recall.exclude_source:
            record["excluding_source"] = None
            if record["own_source"]:
                others = [n for n in items if not own_source(q, n)][: recall.k]
                clean[i], record["excluding_source"] = with_memory(
                    q, others, tokenizer, recall.budget, recall.share
                )
        asked.append(fitted)
        records.append(record)
    return asked, records, clean
