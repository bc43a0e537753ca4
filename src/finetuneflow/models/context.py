"""Fitting a chat prompt into the model's context: the question, the memories retrieved for it and
the conversation so far, token-counted with the real template.

The question (with the system prompt) must fit, or nothing is asked. Memories come next, best
first, up to a share of what is left; the earlier turns fill the rest, the oldest dropped first.
Every candidate is measured by rendering it (``count``), so the template's own tokens are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from finetuneflow.records import Message

CountFn = Callable[[list[Message]], int]
"""Tokens of a rendered prompt (``models.generate.count_prompt_tokens`` bound to a tokenizer)."""

MEMORY_HEADER = "Things you remember that may help (cite the [id] of any you use):"


@dataclass
class Fitted:
    """A prompt that fits, and what went into it."""

    messages: list[Message]
    notes: list[dict[str, Any]]  # the memories in the prompt, in the order given
    history: list[Message]  # the earlier turns in the prompt (user, assistant, ...)
    tokens: int
    dropped_turns: int = 0  # earlier turns left out, oldest first
    dropped_notes: list[Any] = field(default_factory=list)  # ids of memories that did not fit


def note_line(note: dict[str, Any]) -> str:
    """One memory as the model reads it: ``[id] text (source: ...)``."""
    source = f" (source: {note['source']})" if note.get("source") else ""
    return f"[{note.get('id', '?')}] {note['text']}{source}"


def build_messages(
    system: str | None, notes: Sequence[dict[str, Any]], turns: Sequence[tuple[str, str]], question: str
) -> list[Message]:
    """System prompt (with the memories appended), the earlier turns, then the question."""
    parts = [system] if system else []
    if notes:
        parts.append("\n".join([MEMORY_HEADER, *(note_line(n) for n in notes)]))
    out: list[Message] = [{"role": "system", "content": "\n\n".join(parts)}] if parts else []
    for asked, answered in turns:
        out += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return [*out, {"role": "user", "content": question}]


def fit_prompt(
    count: CountFn,
    budget: int,
    question: str,
    turns: Sequence[tuple[str, str]] = (),
    notes: Sequence[dict[str, Any]] = (),
    system: str | None = None,
    note_share: float = 0.5,
) -> Fitted:
    """The largest prompt within ``budget`` tokens: the question, then memories (best first, each
    taken if it fits in ``note_share`` of the room the question leaves), then the most recent
    ``turns`` (question, answer) that fit in the rest.

    Raises:
        ValueError: the question (with the system prompt) alone is over the budget.
    """
    bare = count(build_messages(system, [], [], question))
    if bare > budget:
        raise ValueError(
            f"the question takes {bare} tokens with the system prompt; the model's context leaves "
            f"{budget} for the prompt. Ask something shorter, or lower --max-new-tokens"
        )
    note_room = bare + int(note_share * (budget - bare))
    kept: list[dict[str, Any]] = []
    dropped: list[Any] = []
    for note in notes:
        if count(build_messages(system, [*kept, note], [], question)) <= note_room:
            kept.append(note)
        else:
            dropped.append(note.get("id"))
    drop, tokens = _fewest_dropped(lambda n: count(build_messages(system, kept, turns[n:], question)),
                                   len(turns), budget)  # fmt: skip
    recent = list(turns[drop:])
    messages = build_messages(system, kept, recent, question)
    history = messages[len(messages) - 1 - 2 * len(recent) : -1]
    return Fitted(messages, kept, history, tokens, len(turns) - len(recent), dropped)


def _fewest_dropped(tokens_without: Callable[[int], int], turns: int, budget: int) -> tuple[int, int]:
    """(the fewest oldest turns to drop so the prompt fits ``budget``, its tokens then), found by
    bisection: a prompt only shrinks as turns go, and each try renders and tokenizes the whole
    conversation (dropping one at a time was quadratic: a server's request of 500 turns held the
    tokenizer, which every running answer needs, for seconds). All dropped always fits: the
    question and memories were fitted first."""
    tokens = tokens_without(0)
    if tokens <= budget or turns == 0:
        return 0, tokens
    fits, over = turns, 0
    fitting = tokens_without(turns)
    while fits - over > 1:
        middle = (fits + over) // 2
        if (n := tokens_without(middle)) <= budget:
            fits, fitting = middle, n
        else:
            over = middle
    return fits, fitting
