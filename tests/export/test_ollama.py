"""Ollama Modelfile: FROM/ADAPTER choice, the chat template translated per family and proven by
rendering it like Ollama, stop words, SYSTEM, num_ctx, the Modelfile syntax, ``ollama create``."""
# ruff: noqa: E501  (the families' chat templates below are kept verbatim, one source line per piece)

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from finetuneflow.errors import ExportError
from finetuneflow.events import Emitter
from finetuneflow.export import ollama
from finetuneflow.export import ollama_template as ot
from finetuneflow.export.step import Context, ExportConfig
from finetuneflow.models.chat import end_of_turn_tokens

torch.set_num_threads(1)

# The families' published Jinja chat templates (tokenizer_config.json of the named models).
SMOLLM2 = (  # HuggingFaceTB/SmolLM2-135M-Instruct
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN25 = (  # Qwen/Qwen2.5-0.5B-Instruct, the part without tools
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    '{%- for message in messages %}{%- if (message.role == "user") or (message.role == "system" and not loop.first) '
    'or (message.role == "assistant" and not message.tool_calls) %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (  # meta-llama/Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA2 = (  # meta-llama/Llama-2-7b-chat-hf
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL = (  # mistralai/Mistral-7B-Instruct-v0.2
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
ZEPHYR = (  # HuggingFaceH4/zephyr-7b-beta
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
GEMMA = (  # google/gemma-2-2b-it
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (  # microsoft/Phi-3-mini-4k-instruct
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
# family, template, (bos, eos), extra special tokens, SYSTEM allowed
FAMILIES: dict[str, tuple[str, str, tuple[str | None, str], list[str], bool]] = {
    "smollm2": ("chatml", SMOLLM2, ("<|im_start|>", "<|im_end|>"), [], True),  # its BOS is the turn marker
    "qwen2.5": ("chatml", QWEN25, (None, "<|im_end|>"), [], True),
    "llama3": (
        "llama3",
        LLAMA3,
        ("<|begin_of_text|>", "<|eot_id|>"),
        ["<|start_header_id|>", "<|end_header_id|>"],
        True,
    ),  # fmt: skip
    "llama2": ("inst", LLAMA2, ("<s>", "</s>"), [], True),
    "mistral": ("inst", MISTRAL, ("<s>", "</s>"), [], False),
    "zephyr": ("zephyr", ZEPHYR, ("<s>", "</s>"), ["<|user|>", "<|assistant|>", "<|system|>"], True),
    "gemma": ("gemma", GEMMA, ("<bos>", "<eos>"), ["<start_of_turn>", "<end_of_turn>"], False),
    "phi3": (
        "phi3",
        PHI3,
        ("<s>", "<|endoftext|>"),
        ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
        True,
    ),
}


@pytest.fixture(scope="module")
def trained(trained_run: Path) -> Path:
    return trained_run


def _family_tokenizer(folder: Path, family: str) -> Any:
    from transformers import AutoTokenizer

    _, template, (bos, eos), extra, _ = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(str(folder))
    specials = [t for t in (bos, eos, *extra) if t and t not in tok.get_vocab()]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.bos_token, tok.eos_token, tok.chat_template = bos, eos, template
    return tok


def _run_copy(
    trained: Path, tmp: Path, family: str | None = None, source: dict[str, Any] | None = None
) -> Path:
    """The run copied; its tokenizer given a family's template; its base given an ftf_source.json."""
    run = tmp / "run"
    shutil.copytree(trained, run)
    if family:
        _family_tokenizer(run / "adapter", family).save_pretrained(str(run / "adapter"))
    if source is not None:
        config = json.loads((run / "config.json").read_text())
        base = tmp / "base"
        shutil.copytree(config["model_dir"], base)
        (base / "ftf_source.json").write_text(json.dumps(source))
        (run / "config.json").write_text(json.dumps(config | {"model_dir": str(base)}))
    return run


def _gguf_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + bytes(60))  # only linked beside the Modelfile, never read here
    return str(path)


def _ctx(run: Path, out: Path, results: dict[str, Any], **cfg: Any) -> Context:
    return Context(run, out, ExportConfig(formats=["ollama"], **cfg), Emitter("export", None), results)


def _merged(out: Path) -> dict[str, Any]:
    return {"gguf": {"files": {"q8_0": {"path": _gguf_file(out / "gguf" / "model-q8_0.gguf")}}}}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_translated_template_renders_like_the_jinja_template(family: str, tiny_model: Path) -> None:
    tok = _family_tokenizer(tiny_model, family)
    spec = ot.family_spec(tok)
    template = ot.go_template(spec)
    found = ot.check_template(template, tok)
    assert spec.family == FAMILIES[family][0]
    assert found["mismatches"] == [] and found["conversations"] >= 2
    assert found["skipped"] == (0 if FAMILIES[family][4] else 2)  # no system role: the model refuses it
    for messages in ot.CHECKS[: 1 + FAMILIES[family][4]]:  # token for token as well
        ids = tok(ot.render_hf(tok, messages), add_special_tokens=False)["input_ids"]
        assert (
            tok(ot.render_go(template, ot.ollama_values(messages)), add_special_tokens=False)["input_ids"]
            == ids
        )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_modelfile_per_family(family: str, trained: Path, tmp_path: Path) -> None:
    run = _run_copy(trained, tmp_path, family)
    result = ollama.export_ollama(_ctx(run, tmp_path / "out", _merged(tmp_path / "out")))
    text = Path(result["path"]).read_text()
    commands = ollama.parse_modelfile(text)
    assert (
        commands[0] == ("model", "./model-q8_0.gguf") and (tmp_path / "out/ollama/model-q8_0.gguf").is_file()
    )
    assert "adapter" not in dict(commands) and result["from"] == "merged GGUF"
    tok = _family_tokenizer(trained / "adapter", family)
    assert dict(commands)["template"] == ot.go_template(ot.family_spec(tok))
    stops = [v for n, v in commands if n == "stop"]
    assert stops == list(end_of_turn_tokens(tok)) and FAMILIES[family][2][1] in stops
    assert all(f'PARAMETER stop "{s}"' in text for s in stops)
    assert dict(commands)["num_ctx"] == "1024"  # max(trained 64, min(2048, the model's 1024))
    assert result["template"]["mismatches"] == [] and result["ollama_create"]["status"] == "skipped"


def test_tiny_run_stops_on_every_end_of_turn_token(trained: Path, tmp_path: Path) -> None:
    result = ollama.export_ollama(_ctx(trained, tmp_path, _merged(tmp_path)))
    text = Path(result["path"]).read_text()
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text
    assert result["template"]["source"] == "translated (chatml)" and "SYSTEM" not in text


def test_from_the_ollama_model_with_the_adapter_and_its_template(trained: Path, tmp_path: Path) -> None:
    layer = "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    source = {"kind": "ollama", "name": "registry.ollama.ai/library/smollm2:135m", "template": layer,
              "params": {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2, "num_ctx": 8192}}  # fmt: skip
    run = _run_copy(trained, tmp_path, source=source)
    lora = {"gguf-lora": {"path": _gguf_file(tmp_path / "out" / "gguf" / "adapter-f16.gguf")}}
    result = ollama.export_ollama(_ctx(run, tmp_path / "out", lora))
    commands = ollama.parse_modelfile(Path(result["path"]).read_text())
    assert commands[:3] == [("model", "smollm2:135m"), ("adapter", "./adapter-f16.gguf"), ("template", layer)]
    assert [v for n, v in commands if n == "stop"] == ["<|im_end|>", "<|endoftext|>", "<|im_start|>"]
    assert ("temperature", "0.2") in commands and ("num_ctx", "8192") in commands
    assert result["template"]["source"] == "ollama template layer" and result["template"]["mismatches"] == []


def test_from_a_base_gguf_with_the_adapter(trained: Path, tmp_path: Path) -> None:
    base = _gguf_file(tmp_path / "store" / "base-q4_1.gguf")
    run = _run_copy(trained, tmp_path, source={"kind": "gguf", "path": base})
    lora = {"gguf-lora": {"path": _gguf_file(tmp_path / "out" / "gguf" / "adapter-f16.gguf")}}
    result = ollama.export_ollama(_ctx(run, tmp_path / "out", lora | _merged(tmp_path / "out")))
    commands = ollama.parse_modelfile(Path(result["path"]).read_text())
    assert commands[:2] == [("model", "./base-q4_1.gguf"), ("adapter", "./adapter-f16.gguf")]
    assert (tmp_path / "out" / "ollama" / "base-q4_1.gguf").read_bytes() == Path(base).read_bytes()


def test_no_gguf_says_which_format_is_needed(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="add 'gguf' \\(the merged model"):
        ollama.export_ollama(_ctx(trained, tmp_path, {}))
    lora = {"gguf-lora": {"path": _gguf_file(tmp_path / "adapter-f16.gguf")}}
    with pytest.raises(ExportError, match="'gguf' \\(the merged model"):  # an HF base takes no adapter
        ollama.export_ollama(_ctx(trained, tmp_path, lora))


def test_unknown_template_refused(trained: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    run = _run_copy(trained, tmp_path)
    tok = AutoTokenizer.from_pretrained(str(run / "adapter"))
    tok.chat_template = (
        "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    )
    tok.save_pretrained(str(run / "adapter"))
    with pytest.raises(ExportError, match="not one FineTuneFlow can translate"):
        ollama.export_ollama(_ctx(run, tmp_path / "out", _merged(tmp_path / "out")))


def test_system_from_settings_and_refused_where_the_template_has_none(trained: Path, tmp_path: Path) -> None:
    result = ollama.export_ollama(
        _ctx(trained, tmp_path / "a", _merged(tmp_path / "a"), system="Be brief.\nAlways.")
    )
    assert ("system", "Be brief.\nAlways.") in ollama.parse_modelfile(Path(result["path"]).read_text())
    assert 'SYSTEM """Be brief.\nAlways."""' in Path(result["path"]).read_text()
    run = _run_copy(trained, tmp_path / "g", "gemma")
    with pytest.raises(ExportError, match="no system role"):
        ollama.export_ollama(_ctx(run, tmp_path / "b", _merged(tmp_path / "b"), system="Be brief."))


def test_system_the_training_data_shares(tmp_path: Path) -> None:
    from finetuneflow.state.datasets import split_path, write_jsonl

    def rows(systems: list[str | None]) -> list[dict[str, Any]]:
        chats = []
        for i, s in enumerate(systems):
            msgs = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]
            chats.append({"id": str(i), "messages": ([{"role": "system", "content": s}] if s else []) + msgs})
        return chats

    write_jsonl(split_path(tmp_path / "most", "chat", "train"), rows(["Support bot."] * 3 + [None]))
    write_jsonl(split_path(tmp_path / "few", "chat", "train"), rows(["Support bot.", "Other", None, None]))
    assert ollama.trained_system(tmp_path / "most") == "Support bot."
    assert ollama.trained_system(tmp_path / "few") == "" == ollama.trained_system(tmp_path / "none")


def test_ollama_create_skipped_without_the_binary(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ollama.shutil, "which", lambda _: None)
    result = ollama.export_ollama(_ctx(trained, tmp_path, _merged(tmp_path), ollama_create="support-bot"))
    assert result["ollama_create"]["status"] == "skipped"
    assert (
        "no `ollama` binary" in result["ollama_create"]["reason"]
        and "support-bot" in result["ollama_create"]["reason"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x\nTEMPLTE y\n", "unknown instruction"),
        ("FROM x\nPARAMETER tfs_z 1\n", "unknown parameter"),
        ("FROM x\nPARAMETER num_ctx big\n", "needs a int"),
        ('FROM x\nTEMPLATE """{{ .Prompt }}\n', "unclosed"),
        ("MESSAGE bot hi\nFROM x\n", "MESSAGE role"),
        ("PARAMETER seed 1\n", "no FROM"),
    ],
)
def test_modelfile_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ollama.ModelfileError, match=message):
        ollama.parse_modelfile(text)


def test_modelfile_parses_documented_forms() -> None:
    text = ('# comment\nfrom llama3.2\nPARAMETER temperature 0.7\nPARAMETER stop "<|eot_id|>"\n'
            'SYSTEM """two\nlines"""\nMESSAGE user Is it blue?\nLICENSE """MIT"""\n')  # fmt: skip
    assert ollama.parse_modelfile(text) == [
        ("model", "llama3.2"), ("temperature", "0.7"), ("stop", "<|eot_id|>"), ("system", "two\nlines"),
        ("message", "user: Is it blue?"), ("license", "MIT"),
    ]  # fmt: skip


def test_evaluator_runs_an_ollama_style_template() -> None:
    # the $last idiom of Ollama's published templates (llama3.2, gemma2)
    template = (
        "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        '{{- if eq .Role "user" }}<u>{{ .Content }}</u>{{ if $last }}<a>{{ end }}'
        '{{- else if eq .Role "assistant" }}<a>{{ .Content }}{{ if not $last }}</a>{{ end }}{{ end }}{{- end }}'
    )
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "r"},
        {"role": "user", "content": "s"},
    ]
    assert ot.render_go(template, ot.ollama_values(msgs)) == "<u>q</u><a>r</a><u>s</u><a>"
    with pytest.raises(ot.UnsupportedTemplate):
        ot.render_go("{{ .Content | json }}", {})
