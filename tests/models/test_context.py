"""Fitting a chat prompt into the context budget: the question always, memories up to their share,
then the newest turns; the oldest turns go first. Counted here in words, so budgets are readable."""

from __future__ import annotations

import pytest

from finetuneflow.models.context import MEMORY_HEADER, fit_prompt
from finetuneflow.records import Message


def words(messages: list[Message]) -> int:
    return sum(len(m["content"].split()) + 1 for m in messages)  # +1: a role marker per message


TURNS = [(f"question {i} here", f"answer {i} here") for i in range(5)]  # 8 tokens a turn
NOTES = [
    {"id": 7, "text": "the warranty lasts two years", "source": "manual.pdf"},
    {"id": 8, "text": "x y z"},
]


def test_everything_fits_in_a_large_budget() -> None:
    fitted = fit_prompt(words, 1000, "and now?", TURNS, NOTES, system="Be brief.")
    assert fitted.dropped_turns == 0 and fitted.notes == NOTES
    system = fitted.messages[0]["content"]
    assert system.startswith("Be brief.\n\n" + MEMORY_HEADER)
    assert "[7] the warranty lasts two years (source: manual.pdf)" in system and "[8] x y z" in system
    assert [m["content"] for m in fitted.history[:2]] == ["question 0 here", "answer 0 here"]
    assert fitted.messages[-1] == {"role": "user", "content": "and now?"}
    assert fitted.tokens == words(fitted.messages)


def test_the_oldest_turns_are_dropped_first() -> None:
    fitted = fit_prompt(words, 3 + 8 * 2, "and now?", TURNS)  # the question (3) and two turns
    assert fitted.dropped_turns == 3
    assert [m["content"] for m in fitted.history] == ["question 3 here", "answer 3 here"] + [
        "question 4 here",
        "answer 4 here",
    ]
    assert fitted.tokens <= 19


def test_memories_take_at_most_their_share_and_turns_the_rest() -> None:
    header = len(MEMORY_HEADER.split())
    # the question costs 3; the system message holds the header, then each note's line (7: 8 words,
    # 8: 4 words) and a role marker. A budget of 2 * header + 17 leaves the notes header + 10 tokens:
    # note 8 fits (header + 8), note 7 does not (header + 12), and the turns get the rest.
    budget = 2 * header + 17
    fitted = fit_prompt(words, budget, "and now?", TURNS, NOTES)
    assert [n["id"] for n in fitted.notes] == [8] and fitted.dropped_notes == [7]
    assert fitted.tokens <= budget
    assert fitted.dropped_turns == 5 - (budget - (header + 8)) // 8  # the newest turns that fit


def test_a_question_over_the_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="the question takes 5 tokens"):
        fit_prompt(words, 4, "one two three four")


@pytest.mark.parametrize("budget", [3, 3 + 8, 3 + 8 * 77, 3 + 8 * 499, 3 + 8 * 500, 10_000])
def test_a_long_conversation_is_fitted_in_a_few_renders(budget: int) -> None:
    """Each render tokenizes the whole conversation (on a server, holding the tokenizer every
    running answer needs): 500 turns take ~10 renders, not one per dropped turn, and keep exactly
    the newest turns that fit."""
    turns = [(f"question {i} here", f"answer {i} here") for i in range(500)]
    renders: list[int] = []

    def counted(messages: list[Message]) -> int:
        renders.append(1)
        return words(messages)

    fitted = fit_prompt(counted, budget, "and now?", turns)
    kept = min(500, (budget - 3) // 8)
    assert fitted.dropped_turns == 500 - kept and fitted.tokens == 3 + 8 * kept <= budget
    assert len(renders) <= 12
