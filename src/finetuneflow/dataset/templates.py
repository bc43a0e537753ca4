"""Chat templates rendered in plain Python, one string per conversation.

Each renderer reproduces its family's official Jinja chat template exactly (the tests render both and
compare), including the BOS string: TRL tokenizes a ``text`` column with ``add_special_tokens=False``,
so the BOS must be in the text. No generation prompt is added: these are training texts.

- ``chatml`` (Qwen, SmolLM, OpenHermes): ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, no BOS.
- ``llama3`` (Llama 3 Instruct): ``<|begin_of_text|>``, then per message
  ``<|start_header_id|>role<|end_header_id|>\\n\\n`` + stripped content + ``<|eot_id|>``.
- ``mistral`` (Mistral-7B-Instruct v0.1/v0.2, Mixtral-8x7B-Instruct; tokenizer v1):
  ``<s> [INST] user [/INST] answer</s>``; the system prompt goes in front of the first user turn with a
  blank line; turns must alternate.
- ``zephyr`` (Zephyr, TinyLlama-Chat): ``<|role|>\\ncontent</s>\\n`` per message.
- ``human_assistant`` (plain transcript): ``Human: ...\\n\\nAssistant: ...``, a system prompt as preamble.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from finetuneflow.errors import FormatTemplateError
from finetuneflow.records import Message

__all__ = ["TEMPLATES", "ChatTemplate", "FormatTemplateError", "render"]


@dataclass(frozen=True)
class ChatTemplate:
    """A named chat format and its renderer."""

    name: str
    description: str
    render: Callable[[list[Message]], str]  # raises FormatTemplateError
    bos: str = ""  # the BOS string the rendering starts with ('' when the family has none)
    eos: str = ""  # the string that ends an assistant turn


def _chatml(messages: list[Message]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def _llama3(messages: list[Message]) -> str:
    # The official template strips each message (`message['content'] | trim`).
    turns = (
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in messages
    )
    return "<|begin_of_text|>" + "".join(turns)


def _mistral(messages: list[Message]) -> str:
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    out = ["<s>"]
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise FormatTemplateError(
                "mistral needs user/assistant turns alternating, starting with the user "
                "(a system prompt only first)"
            )
        if expected == "user":
            prefix = f"{system}\n\n" if i == 0 and system is not None else ""
            out.append(f" [INST] {prefix}{m['content']} [/INST]")
        else:
            out.append(f" {m['content']}</s>")
    return "".join(out)


def _zephyr(messages: list[Message]) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}</s>\n" for m in messages)


def _human_assistant(messages: list[Message]) -> str:
    parts: list[str] = []
    for i, m in enumerate(messages):
        if m["role"] == "system":
            if i != 0:
                raise FormatTemplateError("human_assistant takes a system prompt only as the first message")
            parts.append(m["content"])
        else:
            parts.append(f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}")
    return "\n\n".join(parts)


TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("chatml", "ChatML (Qwen, SmolLM, OpenHermes)", _chatml, eos="<|im_end|>"),
        ChatTemplate("llama3", "Llama 3 Instruct", _llama3, bos="<|begin_of_text|>", eos="<|eot_id|>"),
        ChatTemplate("mistral", "Mistral Instruct [INST] (tokenizer v1)", _mistral, bos="<s>", eos="</s>"),
        ChatTemplate("zephyr", "Zephyr <|user|>/<|assistant|>", _zephyr, eos="</s>"),
        ChatTemplate("human_assistant", "plain 'Human: / Assistant:' transcript", _human_assistant),
    )
}


def render(messages: list[Message], template: str) -> str:
    """Render a conversation with a named template.

    Raises:
        ValueError: unknown template name.
        FormatTemplateError: the template cannot express this conversation.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[template].render(messages)
