"""parse_llm_json: each repair on its own, inputs that must fail, and a round-trip invariant."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from finetuneflow.dataset.llm_json import parse_llm_json
from finetuneflow.errors import LLMJSONError

QA = {"question": "a", "answer": "b"}

# (name, model output, expected value, expected repairs)
REPAIRS: list[tuple[str, str, Any, list[str]]] = [
    ("valid", '{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}, []),
    ("empty object is valid", "{}", {}, []),
    ("json fence", '```json\n{"a": 1}\n```', {"a": 1}, ["code fence"]),
    ("bare fence with prose", "Here:\n```\n[1, 2]\n```\nDone.", [1, 2], ["code fence"]),
    ("unclosed fence", '```json\n{"a": [1, 2', {"a": [1]}, ["code fence", "truncated"]),
    ("leading prose", 'Sure! Here is the JSON: {"a": 1}', {"a": 1}, ["leading prose"]),
    ("trailing prose", '{"a": 1}\nLet me know if you need more.', {"a": 1}, ["trailing prose"]),
    ("prose with brackets", 'Note [1]: {"a": 1}', {"a": 1}, ["leading prose"]),
    ("prose with a brace first", 'Use {braces}: {"a": 1}', {"a": 1}, ["leading prose"]),
    ("trailing comma in array", "[1, 2, 3,]", [1, 2, 3], ["trailing comma"]),
    ("trailing comma in object", '{"a": 1, "b": 2,\n}', {"a": 1, "b": 2}, ["trailing comma"]),
    ("single quotes", "{'a': 'x', 'b': ['y']}", {"a": "x", "b": ["y"]}, ["single quotes"]),
    (
        "apostrophe in single quotes",
        "{'q': 'don't panic', 'n': 1}",
        {"q": "don't panic", "n": 1},
        ["single quotes"],
    ),
    ("escaped apostrophe", "{'q': 'it\\'s'}", {"q": "it's"}, ["single quotes"]),
    ("double quote in single quotes", "{'q': 'say \"hi\"'}", {"q": 'say "hi"'}, ["single quotes"]),
    ("apostrophe in double quotes", '{"q": "don\'t", "n": 1,}', {"q": "don't", "n": 1}, ["trailing comma"]),
    (
        "python literals",
        '{"a": True, "b": False, "c": None,}',
        {"a": True, "b": False, "c": None},
        ["python literals", "trailing comma"],
    ),
    (
        "python dict repr",
        "{'ok': True, 'items': [None]}",
        {"ok": True, "items": [None]},
        ["single quotes", "python literals"],
    ),
    (
        "raw newline in string",
        '{"a": "line one\nline two"}',
        {"a": "line one\nline two"},
        ["unescaped newline"],
    ),
    ("raw tab in string", '{"a": "x\ty"}', {"a": "x\ty"}, ["unescaped newline"]),
    (
        "unescaped inner quotes",
        '{"a": "press "Start" twice"}',
        {"a": 'press "Start" twice'},
        ["unescaped quote"],
    ),
    (
        "invalid escape",
        '{"a": "C:\\dir", "b": 1,}',
        {"a": "C:\\dir", "b": 1},
        ["invalid escape", "trailing comma"],
    ),
    (
        "truncated mid-key",
        '{"examples": [{"question": "a", "answer": "b"}, {"question": "c", "ans',
        {"examples": [QA]},
        ["truncated"],
    ),
    (
        "truncated mid-string",
        '{"examples": [{"question": "a", "answer": "b"}, {"question": "the prin',
        {"examples": [QA]},
        ["truncated"],
    ),
    ("truncated after a complete element", '[{"question": "a", "answer": "b"},', [QA], ["truncated"]),
    ("truncated after a colon", '{"a": 1, "b":', {"a": 1}, ["truncated"]),
    ("truncated number", "[1, 2, 3", [1, 2], ["truncated"]),
    ("truncated literal", '{"a": 1, "b": tru', {"a": 1}, ["truncated"]),
    ("truncated inside an escape", '{"a": 1, "b": "x\\', {"a": 1}, ["truncated"]),
    ("truncated nested object", '{"a": 1, "b": {"c": 2, "d', {"a": 1, "b": {"c": 2}}, ["truncated"]),
    ("truncated closes the open string", '["a", "b"', ["a", "b"], ["truncated"]),
    (
        "everything at once",
        "Here you go:\n```json\n{'items': [{'q': 'it's', 'ok': True,}, {'q': 'x",
        {"items": [{"q": "it's", "ok": True}]},
        ["code fence", "single quotes", "python literals", "trailing comma", "truncated"],
    ),
    (
        "backticks inside a string",
        '{"code": "```\\nx\\n```", "ok": True}',
        {"code": "```\nx\n```", "ok": True},
        ["python literals"],
    ),
    ("scalar", "42", 42, []),
    ("python scalar", "True", True, ["python literals"]),
]

# (name, model output, words the reason must contain)
FAILURES: list[tuple[str, str, str]] = [
    ("empty", "", "empty"),
    ("whitespace", "  \n\t ", "empty"),
    ("pure prose", "I'm sorry, I cannot produce that.", "no JSON"),
    ("empty fence", "```json\n```", "fence is empty"),
    ("missing comma", '{"a": [1, 2 3]}', "expected ',' or ']' at line 1"),
    ("unknown word", '{"a": maybe}', "unexpected word 'maybe'"),
    ("unquoted key", "{a: 1}", "expected a quoted key"),
    ("cut before any value", '"the answer is', "cut off"),
    ("stray character", '{"a": @}', "unexpected character '@'"),
]


@pytest.mark.parametrize(("text", "value", "repairs"), [c[1:] for c in REPAIRS], ids=[c[0] for c in REPAIRS])
def test_repairs(text: str, value: Any, repairs: list[str]) -> None:
    got, applied = parse_llm_json(text)
    assert got == value
    assert sorted(applied) == sorted(repairs)


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_failures(text: str, reason: str) -> None:
    with pytest.raises(LLMJSONError) as info:
        parse_llm_json(text)
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason


def test_error_position_is_on_the_right_line() -> None:
    with pytest.raises(LLMJSONError, match="line 3 column 11"):
        parse_llm_json('{\n  "a": 1,\n  "b": [1 2]\n}')


def test_deep_nesting_fails_cleanly() -> None:
    with pytest.raises(LLMJSONError, match="nested too deeply"):
        parse_llm_json("[" * 500)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        alphabet = "abc xyz'\"\\\n\t/{}[],:é€😀"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.randint(-(10**12), 10**12)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["id", "question", "it's", 'say "hi"', "", "ключ"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_valid_json_round_trips_without_repairs() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        value = _random_value(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        assert parse_llm_json(text) == (value, [])
        assert parse_llm_json(f"```json\n{text}\n```") == (value, ["code fence"])


def test_an_empty_examples_list_is_a_problem_not_silence() -> None:
    from finetuneflow.dataset.quality import validate_pairs

    assert validate_pairs({"examples": []}) == ([], ['the "examples" list in the output is empty'])
    assert validate_pairs([]) == ([], ['the "examples" list in the output is empty'])
    assert validate_pairs({"answer": 1})[1] == ['no "examples" list in the output']


def test_numbers_with_leading_zeros_are_read_not_a_crash() -> None:
    """A small model wrote `01` (JSONDecodeError: Extra data) and the generation step crashed."""
    value = parse_llm_json('{"examples": [{"question": "Step 01?", "n": 01, "x": -007.50}]')[0]
    assert value["examples"][0]["n"] == 1 and value["examples"][0]["x"] == -7.5
