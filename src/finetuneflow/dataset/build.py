"""Dataset building: source units (Q&A, conversations, text chunks) -> split, deduplicated examples.

The core (:func:`make_examples`, :func:`split_examples`, :func:`write_dataset`) works on plain data and
files; the API wrapper feeds it the project's chunks from the database.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuneflow.config import setting, to_dict
from finetuneflow.records import Example, Message
from finetuneflow.state.datasets import dataset_hashes, split_path, write_jsonl


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
    min_rating: int = setting(0, "Only examples rated at least this (1-5) or approved; 0 = no filter.")
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


def _uid(kind: str, payload: Any) -> str:
    blob = json.dumps([kind, payload], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_examples(
    units: Iterable[Unit], cfg: DatasetConfig, drops: Counter[str], pii: Counter[str] | None = None
) -> list[Example]:
    """Convert units to examples, dropping exact duplicates and too-short chunks (counted in ``drops``);
    PII is scrubbed when configured (counted per type in ``pii``)."""
    seen: set[str] = set()
    out: list[Example] = []
    for unit in units:
        if cfg.domain and unit.domain != cfg.domain:
            continue
        example = _convert(_scrubbed(unit, pii) if cfg.scrub_pii else unit, cfg)
        if example is None:
            drops["text shorter than min_text_tokens"] += 1
        elif example.id in seen:
            drops["exact duplicate"] += 1
        else:
            seen.add(example.id)
            out.append(example)
    return out


def _scrubbed(unit: Unit, counts: Counter[str] | None) -> Unit:
    from dataclasses import replace

    from finetuneflow.text.pii import scrub

    text, found = scrub(unit.text)
    if counts is not None:
        counts.update(found)
    messages = [{**m, "content": scrub(m["content"])[0]} for m in unit.messages] if unit.messages else None
    return replace(unit, text=text, messages=messages)


def _convert(unit: Unit, cfg: DatasetConfig) -> Example | None:
    meta = {"chunk_id": unit.chunk_id, "page": unit.page, "domain": unit.domain, **(unit.meta or {})}
    if unit.kind in ("qa", "conversation") and unit.messages:
        messages = [dict(m) for m in unit.messages]
        if cfg.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        return Example(_uid("chat", messages), "chat", unit.source, messages=messages, meta=meta)
    if unit.n_tokens < cfg.min_text_tokens:
        return None
    return Example(_uid("text", unit.text), "text", unit.source, text=unit.text, meta=meta)


def _bucket(uid: str, seed: int) -> float:
    """A stable number in [0, 1) per example: the split never depends on input order."""
    return int(hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()[:12], 16) / 16**12


def split_examples(examples: list[Example], cfg: DatasetConfig) -> dict[str, list[Example]]:
    """Deterministic train/eval split by hashed id; at least one chat example goes to eval
    when eval_fraction > 0 and there are two or more."""
    splits: dict[str, list[Example]] = {"train": [], "eval": []}
    for ex in sorted(examples, key=lambda e: e.id):
        share = cfg.eval_fraction if ex.kind == "chat" else cfg.text_eval_fraction
        splits["eval" if _bucket(ex.id, cfg.seed) < share else "train"].append(ex)
    chats = [e for e in splits["train"] if e.kind == "chat"]
    has_eval_chat = any(e.kind == "chat" for e in splits["eval"])
    if cfg.eval_fraction > 0 and not has_eval_chat and len(chats) >= 2:
        moved = min(chats, key=lambda e: _bucket(e.id, cfg.seed))
        splits["train"].remove(moved)
        splits["eval"].append(moved)
    return splits


def write_dataset(
    splits: dict[str, list[Example]],
    out_dir: Path,
    cfg: DatasetConfig,
    drops: Counter[str],
    pii: Counter[str] | None = None,
) -> dict[str, Any]:
    """Write the JSONL files and manifest.json; returns the manifest."""
    counts: dict[str, int] = {}
    for kind in ("chat", "text"):
        for split, examples in splits.items():
            rows = [e.to_json() for e in examples if e.kind == kind]
            counts[f"{kind}/{split}"] = write_jsonl(split_path(out_dir, kind, split), rows)
    sources = Counter(e.source for ex in splits.values() for e in ex)
    manifest = {
        "name": cfg.name,
        "config": to_dict(cfg),
        "counts": counts,
        "dropped": dict(drops),
        "pii_replaced": dict(pii or {}),
        "sources": dict(sorted(sources.items())),
        "files": dataset_hashes(out_dir),
        "load_with": 'datasets.load_dataset("json", data_files={"train": "chat/train.jsonl", '
        '"eval": "chat/eval.jsonl"})',
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def build(units: Iterable[Unit], out_dir: Path, cfg: DatasetConfig) -> dict[str, Any]:
    """The whole core: convert, deduplicate, split, write. Returns the manifest."""
    drops: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    examples = make_examples(units, cfg, drops, pii)
    if not examples:
        raise ValueError("nothing to build: the project has no usable chunks; run `ftf ingest` first")
    return write_dataset(split_examples(examples, cfg), out_dir, cfg, drops, pii)
