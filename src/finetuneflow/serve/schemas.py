"""The request bodies of the OpenAI API that the server reads (fields it does not use are ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finetuneflow.api.serving import ChatRequest
from finetuneflow.errors import RequestRejected


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
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    memory: bool = False

    def to_request(self) -> ChatRequest:
        """The API's request. Raises RequestRejected for what the server does not do (n > 1)."""
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
    """``POST /v1/embeddings``: text inputs only (token-id inputs are refused)."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[Any] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or not all(isinstance(t, str) for t in items):
            raise RequestRejected("input must be a string or a non-empty list of strings", "input")
        return items
