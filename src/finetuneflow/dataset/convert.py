"""The dataset's settings, and the converters: ingested units (Q&A rows, conversations, text chunks)
become examples without an LLM.

:func:`make_examples` works on plain data; ``dataset.step.build_step`` feeds it the project's chunks
and syncs the result into the example pool, where generated examples join them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from finetuneflow.config import setting
from finetuneflow.records import Message


@dataclass
class DatasetConfig:
    """How chunks become a train/eval dataset."""

    name: str = setting("default", "Dataset name (folder under the project's datasets/).")
    eval_fraction: float = setting(
        0.15, "Share of chat examples (Q&A, conversations) held out for evaluation."
    )
    text_eval_fraction: float = setting(0.0, "Share of document chunks held out (0 = all train the model).")
    seed: int = setting(42, "Seed of the deterministic split: same inputs + seed = same split.")
    system_prompt: str = setting("", "System message prepended to chat examples that have none ('' = none).")
    min_text_tokens: int = setting(16, "Document chunks shorter than this many tokens are dropped.")
    scrub_pii: bool = setting(True, "Replace e-mails, phones, IPs, IBANs, cards and keys with placeholders.")
    domain: str = setting("", "Only use chunks of this domain ('' = all).")
    tokenizer: str = setting("", "Model whose tokenizer measures example length ('' = the one ingest used).")
    max_tokens: int = setting(2048, "Examples longer than this many tokens are dropped (and listed).")
    heldout_fraction: float = setting(
        0.1, "Share of generated train questions kept out as the closed-book held-out set."
    )
    min_rating: int = setting(
        0,
        "Keep only examples rated at least this (1-5); 0 = no filter. It applies to every rated example, "
        "approved or not (approval does not lift a low rating); unrated examples pass unless rated_only.",
    )
    rated_only: bool = setting(
        False, "Drop every example nobody rated, approved or not (text chunks and Q&A rows too)."
    )
    formats: list[str] = setting(
        ["messages"], "Export formats besides chat/ and text/: messages, openai, alpaca, sharegpt, ..."
    )

    def problems(self) -> list[str]:
        out = []
        from finetuneflow.dataset.formats import get_format

        for fmt in self.formats:
            try:
                get_format(fmt)
            except ValueError as err:
                out.append(f"formats: {err}")
        if not 0 <= self.heldout_fraction < 1:
            out.append("heldout_fraction: must be in [0, 1)")
        if not 0 <= self.min_rating <= 5:
            out.append("min_rating: must be 0 (no filter) to 5")
        if self.max_tokens < 16:
            out.append("max_tokens: must be >= 16")
        if not 0 <= self.eval_fraction < 1 or not 0 <= self.text_eval_fraction < 1:
            out.append("eval_fraction, text_eval_fraction: must be in [0, 1)")
        if not self.name.replace("-", "").replace("_", "").isalnum():
            out.append(f"name: {self.name!r} must be letters, digits, '-' or '_'")
        if self.min_text_tokens < 0:
            out.append("min_text_tokens: must be >= 0")
        return out


@dataclass
class Unit:
    """A source unit as stored by ingest (a row of the ``chunks`` table)."""

    kind: str  # text | qa | conversation
    source: str
    text: str
    n_tokens: int = 0
    messages: list[Message] | None = None
    chunk_id: int | None = None
    page: int | None = None
    meta: dict[str, Any] | None = None
    domain: str | None = None


@dataclass
class ConvertedExample:
    """A converter's example, before it joins the pool: a chat (``messages``) or plain text."""

    id: str  # content hash: the same content is the same example (the pool's ``uid``)
    kind: Literal["chat", "text"]
    source: str
    messages: list[Message] | None = None
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def content_uid(kind: str, payload: Any) -> str:
    """Stable id of an example's content (``kind`` chat or text): the same content is the same
    example, whether a converter, the LLM or a chat made it (the pool's uid column)."""
    blob = json.dumps([kind, payload], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_examples(units: Iterable[Unit], cfg: DatasetConfig, drops: Counter[str]) -> list[ConvertedExample]:
    """Convert units to examples, dropping exact duplicates and too-short chunks (counted in ``drops``).
    PII is not scrubbed here: the build scrubs converted and generated examples alike."""
    seen: set[str] = set()
    out: list[ConvertedExample] = []
    for unit in units:
        if cfg.domain and unit.domain != cfg.domain:
            continue
        example = _convert(unit, cfg)
        if example is None:
            drops["text shorter than min_text_tokens"] += 1
        elif example.id in seen:
            drops["exact duplicate"] += 1
        else:
            seen.add(example.id)
            out.append(example)
    return out


def _convert(unit: Unit, cfg: DatasetConfig) -> ConvertedExample | None:
    meta = {"chunk_id": unit.chunk_id, "page": unit.page, "domain": unit.domain, **(unit.meta or {})}
    if unit.kind in ("qa", "conversation") and unit.messages:
        messages = [dict(m) for m in unit.messages]
        if cfg.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        uid = content_uid("chat", messages)
        return ConvertedExample(uid, "chat", unit.source, messages=messages, meta=meta)
    if unit.n_tokens < cfg.min_text_tokens:
        return None
    return ConvertedExample(content_uid("text", unit.text), "text", unit.source, text=unit.text, meta=meta)
