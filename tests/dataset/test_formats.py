"""Export formats: exact conversions, reported skips, loadable files, official templates, TRL, OpenAI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.dataset.formats import (
    FORMATS,
    check_openai,
    check_openai_file,
    dataset_info,
    export_rows,
    get_format,
    write_export,
)
from finetuneflow.dataset.templates import TEMPLATES, FormatTemplateError, render

SYS = {"role": "system", "content": "You answer questions about the Brindle printer."}
U1 = {"role": "user", "content": "What does error E4 mean?"}
A1 = {"role": "assistant", "content": "The cover is open."}
U2 = {"role": "user", "content": "How do I fix it?"}
A2 = {"role": "assistant", "content": "Close the cover until it clicks."}


def chat(rid: str, *messages: dict[str, str]) -> dict[str, Any]:
    return {"id": rid, "source": "faq.md", "domain": "printers", "messages": list(messages)}


SINGLE = chat("single", U1, A1)
SINGLE_SYS = chat("single-sys", SYS, U1, A1)
MULTI = chat("multi", U1, A1, U2, A2)
MULTI_SYS = chat("multi-sys", SYS, U1, A1, U2, A2)
GOOD = [SINGLE, SINGLE_SYS, MULTI, MULTI_SYS]
TEXT = {"id": "text", "source": "manual.pdf", "text": "Error E4 means the cover is open."}
NO_ANSWER = chat("no-answer", SYS, U1)
TWO_USERS = chat("two-users", U1, U2, A2)  # expressible as messages, not as alpaca/sharegpt/mistral
EMPTY = chat("empty", U1, {"role": "assistant", "content": "  "})
ALL = [*GOOD, TEXT, NO_ANSWER, TWO_USERS, EMPTY]

# -- exact conversions -----------------------------------------------------------------------------------
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "messages": [{"id": r["id"], "messages": r["messages"]} for r in GOOD],
    "openai": [{"messages": r["messages"]} for r in GOOD],
    "alpaca": [
        {
            "id": "single",
            "instruction": U1["content"],
            "input": "",
            "output": A1["content"],
            "system": "",
            "history": [],
        },
        {
            "id": "single-sys",
            "instruction": U1["content"],
            "input": "",
            "output": A1["content"],
            "system": SYS["content"],
            "history": [],
        },
        {
            "id": "multi",
            "instruction": U2["content"],
            "input": "",
            "output": A2["content"],
            "system": "",
            "history": [[U1["content"], A1["content"]]],
        },
        {
            "id": "multi-sys",
            "instruction": U2["content"],
            "input": "",
            "output": A2["content"],
            "system": SYS["content"],
            "history": [[U1["content"], A1["content"]]],
        },
    ],
    "sharegpt": [
        {
            "id": "single",
            "conversations": [
                {"from": "human", "value": U1["content"]},
                {"from": "gpt", "value": A1["content"]},
            ],
        },
        {
            "id": "single-sys",
            "conversations": [
                {"from": "system", "value": SYS["content"]},
                {"from": "human", "value": U1["content"]},
                {"from": "gpt", "value": A1["content"]},
            ],
        },
        {
            "id": "multi",
            "conversations": [
                {"from": "human", "value": U1["content"]},
                {"from": "gpt", "value": A1["content"]},
                {"from": "human", "value": U2["content"]},
                {"from": "gpt", "value": A2["content"]},
            ],
        },
        {
            "id": "multi-sys",
            "conversations": [
                {"from": "system", "value": SYS["content"]},
                {"from": "human", "value": U1["content"]},
                {"from": "gpt", "value": A1["content"]},
                {"from": "human", "value": U2["content"]},
                {"from": "gpt", "value": A2["content"]},
            ],
        },
    ],
    "prompt_completion": [
        {"id": "single", "prompt": [U1], "completion": [A1]},
        {"id": "single-sys", "prompt": [SYS, U1], "completion": [A1]},
        {"id": "multi", "prompt": [U1, A1, U2], "completion": [A2]},
        {"id": "multi-sys", "prompt": [SYS, U1, A1, U2], "completion": [A2]},
    ],
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_chat_formats_convert_exactly(fmt: str) -> None:
    rows, problems = export_rows(GOOD, fmt)
    assert rows == EXPECTED[fmt]
    assert problems == []


def test_text_formats_render_chats_and_pass_text_rows() -> None:
    rows, problems = export_rows([MULTI_SYS, TEXT], "text:chatml")
    assert problems == []
    assert rows == [
        {"id": "multi-sys", "text": render(MULTI_SYS["messages"], "chatml")},
        {"id": "text", "text": TEXT["text"]},
    ]
    assert rows[0]["text"].startswith("<|im_start|>system\nYou answer")


def test_human_assistant_transcript() -> None:
    assert render(MULTI_SYS["messages"], "human_assistant") == (
        f"{SYS['content']}\n\nHuman: {U1['content']}\n\nAssistant: {A1['content']}"
        f"\n\nHuman: {U2['content']}\n\nAssistant: {A2['content']}"
    )
    with pytest.raises(FormatTemplateError):
        render([U1, SYS, A1], "human_assistant")


def _to_canonical(fmt: str, row: dict[str, Any]) -> list[dict[str, str]]:
    """Invert an export back to messages; used to prove exports lose nothing."""
    if fmt in ("messages", "openai"):
        return list(row["messages"])
    if fmt == "prompt_completion":
        return [*row["prompt"], *row["completion"]]
    if fmt == "sharegpt":
        roles = {"system": "system", "human": "user", "gpt": "assistant"}
        return [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
    head = [{"role": "system", "content": row["system"]}] if row["system"] else []
    for user, answer in [*row["history"], [row["instruction"], row["output"]]]:
        head += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return head


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_exports_round_trip_to_the_canonical_conversation(fmt: str) -> None:
    rows, _ = export_rows(GOOD, fmt)
    assert [_to_canonical(fmt, r) for r in rows] == [r["messages"] for r in GOOD]


# -- skips are reported, never silent --------------------------------------------------------------------
ALWAYS_SKIPPED = {"no-answer": "no assistant message", "empty": "message 2 (assistant) has no content"}
SKIPPED: dict[str, dict[str, str]] = {
    "messages": {"text": "text row"},
    "openai": {"text": "text row"},
    "prompt_completion": {"text": "text row"},
    "alpaca": {"text": "text row", "two-users": "alternating"},
    "sharegpt": {"text": "text row", "two-users": "alternating"},
    "text:chatml": {},
    "text:llama3": {},
    "text:zephyr": {},
    "text:human_assistant": {},
    "text:mistral": {"two-users": "alternating"},
}


@pytest.mark.parametrize("fmt", sorted(SKIPPED))
def test_skipped_rows_are_reported_with_a_reason(fmt: str) -> None:
    rows, problems = export_rows(ALL, fmt)
    expected = {**SKIPPED[fmt], **ALWAYS_SKIPPED}
    assert len(rows) + len(problems) == len(ALL)
    assert len(problems) == len(expected)
    for (rid, reason), problem in zip(
        sorted(expected.items(), key=lambda kv: _index(kv[0])), problems, strict=True
    ):
        assert f"(id {rid})" in problem and fmt in problem and reason in problem, problem


def _index(rid: str) -> int:
    return [r["id"] for r in ALL].index(rid)


def test_every_registered_format_is_covered() -> None:
    assert set(SKIPPED) == set(FORMATS)
    assert {f"text:{name}" for name in TEMPLATES} <= set(FORMATS)


def test_unknown_format_and_non_dict_rows() -> None:
    with pytest.raises(ValueError, match="known: messages"):
        get_format("jsonl")
    rows, problems = export_rows([SINGLE, ["not", "a", "row"]], "messages")  # type: ignore[list-item]
    assert len(rows) == 1 and problems == ["row 2: not an object"]


def test_default_system_prompt_is_added_only_where_missing() -> None:
    rows, _ = export_rows([SINGLE, SINGLE_SYS], "openai", system="Be brief.")
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["messages"][0] == SYS


# -- each renderer equals its family's official Jinja template -------------------------------------------
# ChatML as published with OpenHermes-2.5 / in the transformers chat-templating docs.
CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json.
LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# mistralai/Mixtral-8x7B-Instruct-v0.1 (and Mistral-7B-Instruct-v0.1/v0.2), tokenizer_config.json.
MISTRAL_JINJA = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""  # noqa: E501
# HuggingFaceH4/zephyr-7b-beta, tokenizer_config.json (transformers renders with trim_blocks/lstrip_blocks).
ZEPHYR_JINJA = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}"
    "\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)
OFFICIAL = {  # template -> (Jinja, bos_token, eos_token)
    "chatml": (CHATML_JINJA, "<|endoftext|>", "<|im_end|>"),
    "llama3": (LLAMA3_JINJA, "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": (MISTRAL_JINJA, "<s>", "</s>"),
    "zephyr": (ZEPHYR_JINJA, "<s>", "</s>"),
}
SPACEY = chat(
    "spacey", {"role": "user", "content": "  padded question \n"}, {"role": "assistant", "content": "\nok "}
)
CONVERSATIONS = [*GOOD, SPACEY, chat("multiline", U1, {"role": "assistant", "content": "Step 1.\n\nStep 2."})]


@pytest.mark.parametrize("template", sorted(OFFICIAL))
def test_renderer_equals_the_official_jinja_template(template: str, tiny_tokenizer: Any) -> None:
    jinja, bos, eos = OFFICIAL[template]
    for row in CONVERSATIONS:
        official = tiny_tokenizer.apply_chat_template(
            row["messages"], chat_template=jinja, tokenize=False, bos_token=bos, eos_token=eos
        )
        assert render(row["messages"], template) == official, row["id"]


def test_mistral_refuses_what_its_official_template_refuses(tiny_tokenizer: Any) -> None:
    from jinja2.exceptions import TemplateError as JinjaError

    for messages in ([U1, U2, A2], [A1], [SYS, U1, SYS, A1]):
        with pytest.raises(JinjaError):
            tiny_tokenizer.apply_chat_template(messages, chat_template=MISTRAL_JINJA, tokenize=False)
        with pytest.raises(FormatTemplateError):
            render(messages, "mistral")


# -- written files load with `datasets`, and describe themselves to LLaMA-Factory ---------------------------
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_written_file_loads_with_datasets(fmt: str, tmp_path: Path) -> None:
    from datasets import load_dataset

    rows, _ = export_rows(ALL, fmt)
    path = write_export(rows, tmp_path, fmt, "train")
    assert path == tmp_path / fmt.replace(":", "-") / "train.jsonl"
    assert not list(path.parent.glob("*.tmp"))
    ds = load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == len(rows)
    assert set(ds.column_names) == set(FORMATS[fmt].columns)


def test_dataset_info_describes_every_file_llamafactory_can_read(tmp_path: Path) -> None:
    entries = [(fmt, split) for fmt in FORMATS for split in ("train", "eval")]
    for fmt, split in entries:
        write_export(export_rows(GOOD, fmt)[0], tmp_path, fmt, split)
    info = dataset_info(entries)
    (tmp_path / "dataset_info.json").write_text(json.dumps(info, indent=2))

    assert "prompt_completion_train" not in info  # LLaMA-Factory has no prompt/completion-of-messages reader
    assert info["alpaca_train"]["columns"] == {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": "system",
        "history": "history",
    }
    assert info["text-chatml_eval"] == {"file_name": "text-chatml/eval.jsonl", "columns": {"prompt": "text"}}
    for entry in info.values():
        assert (tmp_path / entry["file_name"]).is_file()
        assert entry["formatting"] in ("alpaca", "sharegpt") if "formatting" in entry else True
        if entry.get("formatting") == "sharegpt":
            _assert_llamafactory_sharegpt_readable(tmp_path / entry["file_name"], entry)


def _assert_llamafactory_sharegpt_readable(path: Path, entry: dict[str, Any]) -> None:
    """LLaMA-Factory's sharegpt rules: optional system turn, then user/assistant alternating, even count."""
    tags = entry["tags"]
    for line in path.read_text().splitlines():
        turns = json.loads(line)[entry["columns"]["messages"]]
        if turns[0][tags["role_tag"]] == tags["system_tag"]:
            turns = turns[1:]
        assert len(turns) % 2 == 0
        for i, turn in enumerate(turns):
            assert turn[tags["role_tag"]] == (tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"])
            assert turn[tags["content_tag"]]


# -- TRL's SFTTrainer trains on the formats it reads natively --------------------------------------------
@pytest.mark.parametrize("fmt", ["messages", "openai", "prompt_completion", "text:chatml"])
def test_sft_trainer_trains_unchanged(
    fmt: str, tiny_model: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    assert FORMATS[fmt].trl_native
    rows, _ = export_rows(ALL, fmt)
    path = write_export(rows, tmp_path / "export", fmt, "train")
    config = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=128,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_model)),
        args=config,
        train_dataset=load_dataset("json", data_files=str(path), split="train"),
        processing_class=tiny_tokenizer,
    )
    result = trainer.train()
    assert result.global_step == 2
    assert math.isfinite(result.training_loss)


# -- OpenAI's format rules -------------------------------------------------------------------------------
OK = {"messages": [U1, A1]}
BAD_OPENAI: list[tuple[str, Any, str]] = [
    ("missing assistant", {"messages": [SYS, U1]}, "no assistant message"),
    (
        "unknown role",
        {"messages": [{"role": "human", "content": "hi"}, A1]},
        "message 1: unrecognized role 'human'",
    ),
    ("empty content", {"messages": [U1, {"role": "assistant", "content": ""}]}, "message 2: empty content"),
    ("missing content", {"messages": [{"role": "user"}, A1]}, "message 1: no content"),
    ("non-string content", {"messages": [{"role": "user", "content": 3}, A1]}, "content is not a string"),
    ("non-dict line", ["messages"], "not a JSON object"),
    ("no messages", {"conversations": []}, "no 'messages' list"),
    ("empty messages", {"messages": []}, "no 'messages' list"),
    ("message not an object", {"messages": ["hi", A1]}, "message 1: not an object"),
    ("unknown message key", {"messages": [{**U1, "from": "me"}, A1]}, "message 1: unrecognized key 'from'"),
    ("unknown top-level key", {**OK, "id": "x"}, "unrecognized key 'id'"),
    ("weight on a user turn", {"messages": [{**U1, "weight": 1}, A1]}, "assistant messages only"),
    ("weight not 0/1", {"messages": [U1, {**A1, "weight": 0.5}]}, "weight must be 0 or 1"),
    ("tool without id", {"messages": [U1, {"role": "tool", "content": "42"}, A1]}, "needs tool_call_id"),
]


@pytest.mark.parametrize(("row", "error"), [c[1:] for c in BAD_OPENAI], ids=[c[0] for c in BAD_OPENAI])
def test_check_openai_rejects(row: Any, error: str) -> None:
    problems = check_openai([OK, row], min_examples=1)
    assert problems and all(p.startswith("line 2: ") for p in problems), problems
    assert any(error in p for p in problems), problems


def test_check_openai_accepts_valid_extras() -> None:
    weighted = {"messages": [U1, {**A1, "weight": 0}, U2, {**A2, "weight": 1}]}
    tool_call = {
        "messages": [
            U1,
            {"role": "assistant", "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "open"},
            A1,
        ]
    }
    assert check_openai([weighted, tool_call], min_examples=1) == []


def test_check_openai_accepts_our_export_and_warns_on_a_small_job() -> None:
    rows, _ = export_rows(ALL, "openai")
    assert check_openai(rows, min_examples=1) == []
    assert check_openai(rows) == [
        f"warning: {len(rows)} examples; an OpenAI fine-tuning job needs at least 10"
    ]
    assert check_openai(rows * 3) == []


def test_check_openai_token_limit_with_a_real_tokenizer(tiny_tokenizer: Any) -> None:
    def count(text: str) -> int:
        return len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])

    long = {"messages": [U1, {"role": "assistant", "content": "The cover is open. " * 50}]}
    assert check_openai([OK, long], min_examples=1, max_tokens=100, count_tokens=count) == [
        f"line 2: about {sum(count(m['content']) + 4 for m in long['messages']) + 3} tokens, "
        "over the per-example limit of 100"
    ]


def test_check_openai_file_reports_lines_that_are_not_json(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(OK) + "\n{not json\n" + json.dumps({"messages": [U1]}) + "\n")
    problems = check_openai_file(path, min_examples=1)
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3"]
    assert "not valid JSON" in problems[0] and "no assistant message" in problems[1]
