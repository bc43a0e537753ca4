"""The shapes of chat / Q&A / reasoning / fact data, turned into :class:`SourceRecord` objects.

Shared by the CSV and JSON readers. Every shape function takes one row or object and returns a
record, a problem description (a string such as ``"empty answer"``) or ``None`` when the value
is not that shape at all, so the caller decides whether to report or skip it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from finetuneflow.records import Message, SourceRecord
from finetuneflow.text.clean import clean_message, clean_text

# (question key, answer key) pairs we recognise, compared case-insensitively, first match wins:
# "instruction"/"output" is listed before "input"/"output" so Alpaca data keeps its instruction.
QA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("question", "answer"),
    ("prompt", "response"),
    ("instruction", "output"),
    ("q", "a"),
    ("user", "assistant"),
    ("human", "bot"),
    ("input", "output"),
)
ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
}
# Per-example fields that describe the example rather than hold its text; kept in ``meta``.
_CARRIED_FIELDS = ("importance", "tags")
_FACT_TEXT_KEYS = ("fact", "text")

ShapeResult = SourceRecord | str | None


def find_qa_keys(keys: list[str]) -> tuple[str, str] | None:
    """The actual (question key, answer key) among ``keys``, matched case-insensitively."""
    by_lower = {key.strip().lower(): key for key in keys}
    for question, answer in QA_COLUMNS:
        if question in by_lower and answer in by_lower:
            return by_lower[question], by_lower[answer]
    return None


def qa_record(values: dict[str, Any], pair: tuple[str, str], line: int | None) -> SourceRecord | str:
    """A ``qa`` record from a row / object, or a problem description ("empty answer")."""
    question = clean_message(as_text(values.get(pair[0])))
    answer = clean_message(as_text(values.get(pair[1])))
    extra = {key: value for key, value in values.items() if key not in pair and value not in ("", None)}
    # Alpaca-style data splits the user turn into instruction + input.
    input_key = next((key for key in extra if key.lower() == "input"), None)
    if pair[0].lower() == "instruction" and input_key:
        question = f"{question}\n\n{clean_message(as_text(extra.pop(input_key)))}".strip()
    if not question:
        return f"empty {pair[0]}"
    if not answer:
        return f"empty {pair[1]}"
    messages: list[Message] = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    meta = {key: value for key, value in extra.items() if key.lower() != "importance"}
    importance_key = next((key for key in extra if key.lower() == "importance"), None)
    if importance_key:
        meta["importance"] = _number_or_text(extra[importance_key])
    return SourceRecord("qa", render(messages), line=line, messages=messages, meta=meta)


def reasoning_record(value: dict[str, Any], line: int | None) -> ShapeResult:
    """``{"problem", "solution"}`` or ``{"question", "reasoning", "answer"}`` as a ``qa`` record.

    The assistant turn is the solution, or the reasoning followed by ``"\\n\\nAnswer: <answer>"``;
    ``meta["unit"]`` is ``"reasoning"``. None when ``value`` has neither shape.
    """
    keys = {key.strip().lower(): key for key in value}
    if "problem" in keys and "solution" in keys:
        record = qa_record(value, (keys["problem"], keys["solution"]), line)
    elif {"question", "reasoning", "answer"} <= keys.keys():
        record = _question_reasoning_answer(value, keys, line)
    else:
        return None
    if isinstance(record, SourceRecord):
        record.meta["unit"] = "reasoning"
    return record


def _question_reasoning_answer(
    value: dict[str, Any], keys: dict[str, str], line: int | None
) -> SourceRecord | str:
    """The ``{"question", "reasoning", "answer"}`` shape; ``keys`` maps lower-case to actual keys."""
    reasoning = clean_message(as_text(value[keys["reasoning"]]))
    answer = clean_message(as_text(value[keys["answer"]]))
    if not reasoning or not answer:
        return f"empty {keys['answer'] if reasoning else keys['reasoning']}"
    merged = {key: item for key, item in value.items() if key != keys["reasoning"]}
    merged[keys["answer"]] = f"{reasoning}\n\nAnswer: {answer}"
    return qa_record(merged, (keys["question"], keys["answer"]), line)


def _number_or_text(value: Any) -> Any:
    """An importance written as text (CSV cells) becomes a float; anything else is kept as given."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value.strip()
    return value


def conversation_record(turns: list[Any], line: int | None) -> SourceRecord | str:
    """A ``conversation`` record from OpenAI (role/content) or ShareGPT (from/value) turns."""
    messages: list[Message] = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            return f"message {number} is not an object"
        raw_role = str(turn.get("role", turn.get("from", ""))).strip().lower()
        role = ROLE_NAMES.get(raw_role)
        if role is None:
            return f"message {number} has unsupported role '{raw_role}'; use system, user or assistant"
        content = clean_message(as_text(turn.get("content", turn.get("value"))))
        if content:  # an empty turn carries nothing to learn
            messages.append({"role": role, "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing user turn has no answer to learn from
    roles = {message["role"] for message in messages}
    if not {"user", "assistant"} <= roles:
        return "conversation has no user message followed by a non-empty assistant reply"
    return SourceRecord("conversation", render(messages), line=line, messages=messages)


def render(messages: list[Message]) -> str:
    """Plain 'role: content' rendering used as the record's text."""
    return "\n".join(f"{message['role']}: {message['content']}" for message in messages)


def as_text(value: Any) -> str:
    """Message content as a string; OpenAI content-part lists keep only their text parts."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(part.get("text", "")) for part in value if isinstance(part, dict))
    return value if isinstance(value, str) else str(value)


def example(value: Any, line: int | None) -> ShapeResult:
    """A record from one chat / Q&A / reasoning object, a problem description, or None if it is none."""
    if not isinstance(value, dict):
        return None
    for key in ("messages", "conversations"):
        turns = value.get(key)
        if isinstance(turns, list) and turns and _looks_like_turn(turns[0]):
            record = conversation_record(turns, line)
            if isinstance(record, SourceRecord):
                record.meta.update(_carried(value))
            return record
    reasoning = reasoning_record(value, line)
    if reasoning is not None:
        return reasoning
    pair = find_qa_keys(list(value))
    return qa_record(value, pair, line) if pair else None


def _looks_like_turn(turn: Any) -> bool:
    """True for a chat turn object; a wrapper's list of examples holds objects without roles."""
    return isinstance(turn, dict) and ("role" in turn or "from" in turn)


def _carried(value: dict[str, Any]) -> dict[str, Any]:
    """The importance / tags fields of an example object, for the record's ``meta``."""
    carried = {key.lower(): item for key, item in value.items() if key.lower() in _CARRIED_FIELDS}
    if "importance" in carried:
        carried["importance"] = _number_or_text(carried["importance"])
    return {key: item for key, item in carried.items() if item not in ("", None)}


def fact_records(facts: list[Any]) -> tuple[list[SourceRecord], list[str]]:
    """``text`` records from a ``"facts"`` list of strings or ``{"fact"|"text", "importance", "tags"}``.

    Returns the records and one problem per unusable fact (``"fact 3: no text"``).
    """
    records: list[SourceRecord] = []
    problems: list[str] = []
    for number, fact in enumerate(facts, start=1):
        if isinstance(fact, str):
            text, meta = clean_text(fact), {}
        elif isinstance(fact, dict):
            key = next((key for key in fact if key.lower() in _FACT_TEXT_KEYS), None)
            text, meta = clean_text(as_text(fact.get(key))) if key else "", _carried(fact)
        else:
            problems.append(f"fact {number}: not a string or an object")
            continue
        if text:
            records.append(SourceRecord("text", text, meta={"unit": "fact", **meta}))
        else:
            problems.append(f"fact {number}: no text (use a string or an object with 'fact' or 'text')")
    return records, problems


def text_record(value: Any, line: int | None) -> SourceRecord | None:
    """Arbitrary JSON as one ``text`` record of its string values, one per line; None if none."""
    text = clean_text("\n".join(strings(value)))
    return SourceRecord("text", text, line=line) if text else None


def strings(value: Any) -> Iterator[str]:
    """Every non-blank string value in a JSON value, depth first, in document order."""
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
