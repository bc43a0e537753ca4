"""A chat row's question is everything before its last answer; samples are seeded and keep file order."""

from __future__ import annotations

from finetuneflow.text.questions import question_of, sample


def chat(i: int, *turns: tuple[str, str]) -> dict[str, object]:
    return {"id": str(i), "source": "s", "messages": [{"role": r, "content": c} for r, c in turns]}


def test_the_question_is_the_conversation_up_to_the_last_answer() -> None:
    row = chat(1, ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "E21?"),
               ("assistant", "Heater cut-out."))  # fmt: skip
    q = question_of(row)
    assert q is not None and q.id == "1" and q.source == "s"
    assert q.text == "E21?" and q.reference == "Heater cut-out." and len(q.prompt) == 4
    assert q.references == ("Heater cut-out.",)


def test_rows_without_an_answer_to_a_prompt_ask_nothing() -> None:
    assert question_of(chat(1, ("user", "Hi"))) is None
    assert question_of(chat(2, ("assistant", "Hello"))) is None
    assert question_of({"id": "3", "text": "plain text"}) is None


def test_samples_are_seeded_in_file_order_and_whole_when_small() -> None:
    rows = [chat(i, ("user", f"Q{i}"), ("assistant", f"A{i}")) for i in range(20)]
    first = [q.id for q in sample(rows, 5, 0, "recall")]
    assert first == [q.id for q in sample(rows, 5, 0, "recall")]
    assert first == sorted(first, key=int) and len(first) == 5
    assert first != [q.id for q in sample(rows, 5, 1, "recall")]
    assert first != [q.id for q in sample(rows, 5, 0, "eval")]  # each set draws its own sample
    assert [q.id for q in sample(rows[:3], 5, 0, "recall")] == ["0", "1", "2"]
