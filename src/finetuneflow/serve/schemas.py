"""The request bodies of the OpenAI API that the server reads. Fields that would change the answer
and that the server does not do (``logprobs``, ``tools``, a JSON ``response_format``, ...) are
refused by name; fields that are harmless to ignore (``user``, ``store``, ``metadata``, ...) are."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from finetuneflow.api.serving import ChatRequest
from finetuneflow.errors import RequestRejected
from finetuneflow.models.generate import MIN_TEMPERATURE, SEED_RANGE

MAX_TEMPERATURE = 2.0  # OpenAI's documented range is 0 to 2

# OpenAI's chat fields that change the answer, which this server does not do, each with the values
# that ask for nothing (what some clients send by default): any other value is refused.
UNSUPPORTED_CHAT: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "web_search_options": (None,),
}


class TextPart(BaseModel):
    """One part of a message's content; only text parts are understood."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[TextPart] | None = None

    def text(self, index: int) -> str:
        """The content as plain text. Raises RequestRejected for a non-text part."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise RequestRejected("only text content is understood", f"messages[{index}].content")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatBody(BaseModel):
    """``POST /v1/chat/completions``; ``memory`` (ours) recalls memories into the prompt."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage]
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])  # what torch's generators take
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    memory: bool = False

    @field_validator("temperature")
    @classmethod
    def _not_too_low(cls, value: float | None) -> float | None:
        # the logits are divided by it: near 0 they overflow to inf (see MIN_TEMPERATURE)
        if value is not None and 0 < value < MIN_TEMPERATURE:
            range_ = f"must be 0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}"
            raise PydanticCustomError("temperature_too_low", range_)
        return value

    def to_request(self) -> ChatRequest:
        """The API's request. Raises RequestRejected for what the server does not do (n > 1, an
        unsupported field) or cannot read (text that is not UTF-8), naming the field."""
        check_text(self.model_dump())
        refuse_unsupported(self.model_extra or {})
        if self.n not in (None, 1):
            raise RequestRejected("this server answers one choice per request: n must be 1", "n")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise RequestRejected("at most 4 stop sequences", "stop")
        messages = [{"role": m.role, "content": m.text(i)} for i, m in enumerate(self.messages)]
        return ChatRequest(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=stop,
            memory=self.memory,
        )


class EmbeddingBody(BaseModel):
    """``POST /v1/embeddings``: text inputs only (token-id inputs are refused); ``dimensions`` only
    as the embedder's own size (the server checks it: it knows the embedder)."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[Any] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        check_text(self.model_dump())
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or not all(isinstance(t, str) for t in items):
            raise RequestRejected("input must be a string or a non-empty list of strings", "input")
        return items


def refuse_unsupported(extra: dict[str, Any]) -> None:
    """Raise RequestRejected for the first field of ``UNSUPPORTED_CHAT`` that asks for something:
    ignoring it would answer another question than the one asked, without saying so."""
    for name, harmless in UNSUPPORTED_CHAT.items():
        if name in extra and extra[name] not in harmless:
            allowed = " or ".join(json.dumps(v) for v in harmless if v is not None)
            instead = f"leave it out{f' or send {allowed}' if allowed else ''}"
            raise RequestRejected(
                f"{name}: this server does not support it; {instead}", name, "unsupported_parameter"
            )


def check_text(value: Any, where: str = "") -> None:
    """Raise RequestRejected naming the first string in ``value`` (a parsed JSON body) that is not
    UTF-8 text. JSON may escape a lone surrogate (``"\\ud800"``); no tokenizer or answer can hold one."""
    if isinstance(value, str):
        if not _encodable(value):
            raise RequestRejected(
                f"{where or 'body'}: the text holds a lone surrogate (an unpaired \\ud800-\\udfff escape); "
                "send valid UTF-8 text",
                where or None,
                "invalid_text",
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(str(key)):  # the key itself cannot be named in the answer
                check_text(str(key), where)
            check_text(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{where}[{i}]")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
