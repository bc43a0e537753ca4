"""Questions asked with the project's memory in the prompt, built exactly as ``ftf chat`` builds it.

The step never touches the memory itself: whoever calls it passes a ``retrieve(question) -> items``
function (the api layer binds it to ``api.recall``). For each question the recalled items go through
:func:`finetuneflow.models.context.fit_prompt`, the function chat and the server use, with the
question's own system message and earlier turns. What was recalled, and which items made it into the
prompt, is recorded per question (``rows[i]["memory"]``) so a reader can check for leakage: an item
that holds the reference answer itself shows up there with its id and source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from finetuneflow.evaluate.sets import Question
from finetuneflow.models.context import fit_prompt
from finetuneflow.records import Message

Retrieve = Callable[[str], list[dict[str, Any]]]
"""Memory items for a question, best first: ``id``, ``text``, ``source``, ``score`` (at least ``text``)."""
RECORDED = ("id", "source", "score", "kind")  # what a row keeps of each recalled item


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


def with_memory(
    question: Question, notes: Sequence[dict[str, Any]], tokenizer: Any, budget: int, share: float
) -> tuple[Question, dict[str, Any]]:
    """``question`` with ``notes`` in its system prompt (as chat fits them into ``budget`` tokens),
    and the record of what was recalled: ``{"retrieved": [{id, source, score, kind}], "in_prompt":
    [ids], "dropped": [ids], "prompt_tokens"}``."""
    from finetuneflow.models.generate import count_prompt_tokens

    system, turns, text = split_prompt(question.prompt)
    count = partial(count_prompt_tokens, tokenizer)
    fitted = fit_prompt(count, budget, text, turns, notes, system, share)
    record = {
        "retrieved": [{k: n.get(k) for k in RECORDED} for n in notes],
        "in_prompt": [n.get("id") for n in fitted.notes],
        "dropped": list(fitted.dropped_notes),
        "prompt_tokens": fitted.tokens,
    }
    return replace(question, prompt=fitted.messages), record


def memory_questions(
    questions: Sequence[Question], retrieve: Retrieve, tokenizer: Any, budget: int, share: float
) -> tuple[list[Question], list[dict[str, Any]]]:
    """Every question with its memories in the prompt, and each one's record (see :func:`with_memory`)."""
    asked, records = [], []
    for q in questions:
        fitted, record = with_memory(q, retrieve(q.text), tokenizer, budget, share)
        asked.append(fitted)
        records.append(record)
    return asked, records
