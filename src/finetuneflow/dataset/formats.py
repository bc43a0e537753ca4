"""Exports every trainer reads: one canonical dataset written in the file format a tool expects.

Input rows are the dataset's own (see ``io.py``): chat rows ``{"id", "source", "messages", ...}`` and
text rows ``{"id", "source", "text"}``. Each :class:`Format` converts one row or refuses it with a reason
(:class:`SkipRow`); :func:`export_rows` collects the refusals, so nothing is dropped silently.

| format | row written | read by |
|---|---|---|
| ``messages`` | ``{"id", "messages": [{"role", "content"}]}`` | TRL, LLaMA-Factory, axolotl |
| ``openai`` | ``{"messages": [...]}`` only | OpenAI fine-tuning API (see :func:`check_openai`), TRL |
| ``alpaca`` | ``{"id", "instruction", "input", "output", "system", "history"}`` | LLaMA-Factory |
| ``sharegpt`` | ``{"id", "conversations": [{"from": human|gpt|system, "value"}]}`` | LLaMA-Factory, TRL |
| ``prompt_completion`` | ``{"id", "prompt": [messages], "completion": [last assistant message]}`` | TRL |
| ``text:<template>`` | ``{"id", "text"}``: the chat rendered (``templates.py``), text rows as is | TRL |

:func:`dataset_info` writes the LLaMA-Factory ``dataset_info.json`` for the files it can read.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow.dataset.templates import TEMPLATES, FormatTemplateError, render
from finetuneflow.records import Message
from finetuneflow.state.datasets import write_jsonl

__all__ = [
    "FORMATS",
    "Format",
    "SkipRow",
    "check_openai",
    "check_openai_file",
    "dataset_info",
    "export_path",
    "export_rows",
    "get_format",
    "write_export",
]

Row = dict[str, Any]
ROLES = ("system", "user", "assistant")
SHAREGPT_TAGS = {"system": "system", "user": "human", "assistant": "gpt"}  # LLaMA-Factory's defaults


class SkipRow(Exception):
    """This row cannot be written in this format; the message says why."""


@dataclass(frozen=True)
class Format:
    """An export format: a row converter plus what external tools need to know about the files."""

    name: str
    description: str
    convert: Callable[[Row], Row]  # one canonical row -> one exported row; raises SkipRow
    llamafactory: dict[str, Any] | None = None  # dataset_info.json entry less file_name; None: unreadable
    trl_native: bool = False  # TRL's SFTTrainer trains on the file unchanged
    columns: tuple[str, ...] = field(default=())  # the columns of every written row


# -- reading the canonical row ----------------------------------------------------------------------------
def _messages(row: Row) -> list[Message]:
    """The row's conversation as ``{role, content}`` dicts, checked; raises SkipRow."""
    if "messages" not in row:
        if "text" in row:
            raise SkipRow("a text row (no messages); this format holds conversations only")
        raise SkipRow("no 'messages'")
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise SkipRow("'messages' is not a non-empty list")
    out: list[Message] = []
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            raise SkipRow(f"message {i} is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise SkipRow(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise SkipRow(f"message {i} ({role}) has no content")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise SkipRow("no assistant message")
    return out


def _split_system(msgs: list[Message], fmt: str) -> tuple[str, list[Message]]:
    """('' or the leading system prompt, the other turns); a later system message cannot be expressed."""
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
    turns = msgs[1:] if system else msgs
    if any(m["role"] == "system" for m in turns):
        raise SkipRow(f"{fmt} takes a system prompt only as the first message")
    return system, turns


def _pairs(turns: list[Message], fmt: str) -> list[tuple[str, str]]:
    """(user, assistant) pairs; turns must alternate, starting with the user, ending with the assistant."""
    roles = [m["role"] for m in turns]
    if len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise SkipRow(
            f"{fmt} needs user/assistant turns alternating, starting with the user and ending "
            f"with the assistant (got {'/'.join(roles)})"
        )
    return [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]


def _with_id(row: Row, out: Row) -> Row:
    return {"id": row["id"], **out} if "id" in row else out


# -- converters -----------------------------------------------------------------------------------------
def to_messages(row: Row) -> Row:
    """Canonical chat: ``id`` and ``messages``; provenance columns dropped."""
    return _with_id(row, {"messages": _messages(row)})


def to_openai(row: Row) -> Row:
    """OpenAI chat fine-tuning: ``messages`` and nothing else."""
    return {"messages": _messages(row)}


def to_alpaca(row: Row) -> Row:
    """LLaMA-Factory alpaca: the last exchange as instruction/output, earlier ones as ``history`` pairs."""
    system, turns = _split_system(_messages(row), "alpaca")
    *history, (instruction, output) = _pairs(turns, "alpaca")
    return _with_id(
        row,
        {
            "instruction": instruction,
            "input": "",
            "output": output,
            "system": system,
            "history": [[u, a] for u, a in history],
        },
    )


def to_sharegpt(row: Row) -> Row:
    """LLaMA-Factory sharegpt: ``conversations`` of from/value, the system prompt as a first 'system' turn."""
    system, turns = _split_system(_messages(row), "sharegpt")
    _pairs(turns, "sharegpt")  # LLaMA-Factory drops conversations that do not alternate
    head = [{"from": "system", "value": system}] if system else []
    return _with_id(
        row,
        {"conversations": head + [{"from": SHAREGPT_TAGS[m["role"]], "value": m["content"]} for m in turns]},
    )


def to_prompt_completion(row: Row) -> Row:
    """TRL conversational prompt/completion: everything before the last assistant turn, then that turn."""
    msgs = _messages(row)
    if msgs[-1]["role"] != "assistant":
        raise SkipRow("prompt_completion needs the conversation to end with the assistant")
    if len(msgs) == 1:
        raise SkipRow("prompt_completion needs a prompt before the assistant's answer")
    return _with_id(row, {"prompt": msgs[:-1], "completion": msgs[-1:]})


def _text_converter(template: str) -> Callable[[Row], Row]:
    def convert(row: Row) -> Row:
        if "messages" not in row and "text" in row:
            text = row["text"]
            if not isinstance(text, str) or not text.strip():
                raise SkipRow("empty text")
            return _with_id(row, {"text": text})
        try:
            return _with_id(row, {"text": render(_messages(row), template)})
        except FormatTemplateError as exc:
            raise SkipRow(str(exc)) from exc

    return convert


# -- the registry -----------------------------------------------------------------------------------------
def _lf_sharegpt(column: str, role: str, content: str, user: str, assistant: str) -> dict[str, Any]:
    tags = dict(
        role_tag=role, content_tag=content, user_tag=user, assistant_tag=assistant, system_tag="system"
    )
    return {"formatting": "sharegpt", "columns": {"messages": column}, "tags": tags}


_LF_MESSAGES = _lf_sharegpt("messages", "role", "content", "user", "assistant")
_LF_SHAREGPT = _lf_sharegpt("conversations", "from", "value", "human", "gpt")
_LF_ALPACA = {
    "formatting": "alpaca",
    "columns": dict(
        prompt="instruction", query="input", response="output", system="system", history="history"
    ),
}
_LF_TEXT = {"columns": {"prompt": "text"}}  # LLaMA-Factory reads a text column for pre-training (stage: pt)
_ID = ("id",)

# name, converter, LLaMA-Factory entry, TRL-native, columns written, description
_TABLE: list[tuple[str, Callable[[Row], Row], dict[str, Any] | None, bool, tuple[str, ...], str]] = [
    ("messages", to_messages, _LF_MESSAGES, True, (*_ID, "messages"), "canonical chat: id + messages"),
    ("openai", to_openai, _LF_MESSAGES, True, ("messages",), "OpenAI chat fine-tuning JSONL: messages only"),
    (
        "alpaca",
        to_alpaca,
        _LF_ALPACA,
        False,
        (*_ID, "instruction", "input", "output", "system", "history"),
        "LLaMA-Factory alpaca: instruction/input/output/system/history",
    ),
    (
        "sharegpt",
        to_sharegpt,
        _LF_SHAREGPT,
        False,
        (*_ID, "conversations"),
        "LLaMA-Factory sharegpt: conversations [{from: human|gpt|system, value}]",
    ),
    (
        "prompt_completion",
        to_prompt_completion,
        None,
        True,
        (*_ID, "prompt", "completion"),
        "TRL conversational prompt/completion (loss on the completion)",
    ),
] + [
    (
        f"text:{t.name}",
        _text_converter(t.name),
        _LF_TEXT,
        True,
        (*_ID, "text"),
        f"text rendered as {t.description}",
    )
    for t in TEMPLATES.values()
]


FORMATS: dict[str, Format] = {
    name: Format(name, desc, convert, lf, trl, columns) for name, convert, lf, trl, columns, desc in _TABLE
}


def get_format(name: str) -> Format:
    """The registered format called ``name``.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


# -- exporting --------------------------------------------------------------------------------------------
def export_rows(
    rows: Iterable[Row], fmt: str | Format, *, system: str | None = None
) -> tuple[list[Row], list[str]]:
    """Convert canonical rows to ``fmt``: (converted rows, one problem line per skipped row).

    ``system``, when given, is put in front of every conversation that has no system prompt.
    """
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    out: list[Row] = []
    problems: list[str] = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            problems.append(f"row {i}: not an object")
            continue
        try:
            out.append(f.convert(_with_system(row, system)))
        except SkipRow as exc:
            where = f"row {i} (id {row['id']})" if "id" in row else f"row {i}"
            problems.append(f"{where}: skipped for {f.name}: {exc}")
    return out, problems


def _with_system(row: Row, system: str | None) -> Row:
    msgs = row.get("messages")
    if not system or not isinstance(msgs, list) or not msgs:
        return row
    if isinstance(msgs[0], dict) and msgs[0].get("role") == "system":
        return row
    return {**row, "messages": [{"role": "system", "content": system}, *msgs]}


def export_path(out_dir: Path, fmt: str, split: str) -> Path:
    """Where :func:`write_export` puts a split: ``<out_dir>/<format>/<split>.jsonl`` (':' becomes '-')."""
    return out_dir / fmt.replace(":", "-") / f"{split}.jsonl"


def write_export(rows: Iterable[Row], out_dir: Path, fmt: str | Format, split: str) -> Path:
    """Write rows already converted by :func:`export_rows` as JSONL, atomically; returns the path."""
    name = fmt if isinstance(fmt, str) else fmt.name
    path = export_path(out_dir, get_format(name).name, split)
    write_jsonl(path, rows)
    return path


def dataset_info(entries: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """LLaMA-Factory ``dataset_info.json`` for exported (format, split) files under one folder.

    Datasets are named ``<format>_<split>`` ('text:chatml' -> 'text-chatml_train'); formats LLaMA-Factory
    cannot read (``prompt_completion``) get no entry. ``text:*`` entries are pre-training data (stage pt).
    """
    info: dict[str, Any] = {}
    for fmt, split in entries:
        f = get_format(fmt)
        if f.llamafactory is None:
            continue
        slug = f.name.replace(":", "-")
        info[f"{slug}_{split}"] = {"file_name": f"{slug}/{split}.jsonl", **copy.deepcopy(f.llamafactory)}
    return info


# -- OpenAI's rules ---------------------------------------------------------------------------------------
# From OpenAI's fine-tuning guide and its data-preparation cookbook: each line a JSON object with a
# non-empty `messages` list; every message a role (system/user/assistant, or tool/function for tool use)
# and string content (an assistant turn that calls a tool may have none); `weight` 0 or 1, assistant only;
# at least one assistant message; a per-example token limit (65,536 for gpt-4o-mini and gpt-4.1 family,
# 16,385 for gpt-3.5-turbo); and a job needs at least 10 examples.
OPENAI_ROLES = ("system", "user", "assistant", "tool", "function")
OPENAI_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id", "refusal"}
)
OPENAI_EXAMPLE_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
OPENAI_MAX_TOKENS = 65_536
OPENAI_MIN_EXAMPLES = 10


def _estimate_tokens(text: str) -> int:
    """Roughly 4 bytes of UTF-8 per token (BPE on English); pass a real counter for exact limits."""
    return (len(text.encode("utf-8")) + 3) // 4


def _check_content(m: dict[str, Any]) -> str | None:
    content = m.get("content")
    calls_tool = m.get("role") == "assistant" and (m.get("tool_calls") or m.get("function_call"))
    if content is None and calls_tool:
        return None
    if isinstance(content, str):
        return None if content.strip() else "empty content"
    if isinstance(content, list) and content and all(isinstance(p, dict) and "type" in p for p in content):
        return None  # content parts (text/image), as in vision fine-tuning
    return "no content" if content is None else "content is not a string"


def _check_message(m: Any) -> list[str]:
    if not isinstance(m, dict):
        return ["not an object"]
    errors: list[str] = []
    role = m.get("role")
    if role not in OPENAI_ROLES:
        errors.append(f"unrecognized role {role!r}" if "role" in m else "no role")
    errors += [f"unrecognized key {k!r}" for k in m if k not in OPENAI_MESSAGE_KEYS]
    if (content_error := _check_content(m)) is not None:
        errors.append(content_error)
    if "weight" in m:
        if role != "assistant":
            errors.append("weight is allowed on assistant messages only")
        elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
            errors.append(f"weight must be 0 or 1, got {m['weight']!r}")
    if role == "tool" and "tool_call_id" not in m:
        errors.append("a tool message needs tool_call_id")
    if role == "function" and "name" not in m:
        errors.append("a function message needs name")
    return errors


def _check_example(ex: Any, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    if not isinstance(ex, dict):
        return ["not a JSON object"]
    msgs = ex.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return ["no 'messages' list"]
    errors = [f"unrecognized key {k!r}" for k in ex if k not in OPENAI_EXAMPLE_KEYS]
    for j, m in enumerate(msgs, 1):
        errors += [f"message {j}: {e}" for e in _check_message(m)]
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
        errors.append("no assistant message")
    # ~4 tokens of framing per message, as in OpenAI's cookbook estimate.
    texts = [m.get("content") for m in msgs if isinstance(m, dict)]
    n = sum(count_tokens(t) + 4 for t in texts if isinstance(t, str)) + 3
    if n > max_tokens:
        errors.append(f"about {n} tokens, over the per-example limit of {max_tokens}")
    return errors


def _check_numbered(
    items: Iterable[tuple[int, Any]], max_tokens: int, min_examples: int, count_tokens: Callable[[str], int]
) -> list[str]:
    problems: list[str] = []
    n = 0
    for line, ex in items:
        n += 1
        problems += [f"line {line}: {e}" for e in _check_example(ex, max_tokens, count_tokens)]
    if n < min_examples:
        problems.append(f"warning: {n} examples; an OpenAI fine-tuning job needs at least {min_examples}")
    return problems


def check_openai(
    rows: Iterable[Any],
    *,
    max_tokens: int = OPENAI_MAX_TOKENS,
    min_examples: int = OPENAI_MIN_EXAMPLES,
    count_tokens: Callable[[str], int] | None = None,
) -> list[str]:
    """Every violation of OpenAI's chat fine-tuning format, as 'line N: ...' (1-based, one row a line).

    Token counts are estimated unless ``count_tokens`` is given. Too few examples gives a line
    starting with 'warning:' (the file is valid, the job would be refused).
    """
    return _check_numbered(enumerate(rows, 1), max_tokens, min_examples, count_tokens or _estimate_tokens)


def check_openai_file(
    path: Path,
    *,
    max_tokens: int = OPENAI_MAX_TOKENS,
    min_examples: int = OPENAI_MIN_EXAMPLES,
    count_tokens: Callable[[str], int] | None = None,
) -> list[str]:
    """:func:`check_openai` on a JSONL file, also reporting the lines that are not JSON at all."""
    parsed: list[tuple[int, Any]] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                parsed.append((line_no, json.loads(line)))
            except ValueError as exc:
                problems.append(f"line {line_no}: not valid JSON ({exc})")
    return problems + _check_numbered(parsed, max_tokens, min_examples, count_tokens or _estimate_tokens)
