"""From the live pool rows to the files every trainer reads: scrub, length check, dedup, split.

Each stage is a filter that keeps or drops with a reason; the funnel (in, kept per stage) and every
dropped row go to ``stats.json`` and ``rejected.jsonl``, so no example disappears silently.

Splits are by document: a source file's text chunks and the rows generated from it all land on
one side, so eval never sees a paraphrase of what was trained on. A Q&A sheet row or a conversation
is its own document (its rows are independent). With fewer than :data:`MIN_DOCUMENTS` generated
documents a document split would leave one side empty, so rows are grouped by chunk instead (the
manifest says which): a chunk's text and its questions still land on one side. The side depends
only on the content and the seed, never on the order rows come in. The closed-book ``heldout`` set
is a share of the *train* documents' generated questions, kept out of training, asked without the
chunk: did the model learn the material?
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finetuneflow.dataset.quality import dedup_rows
from finetuneflow.text.dedup import DedupConfig
from finetuneflow.text.pii import scrub

MIN_DOCUMENTS = 4
PER_MESSAGE_TOKENS = 4  # role markers and end-of-turn of a chat template, per message
CountFn = Callable[[list[str]], list[int]]


@dataclass
class Finalized:
    splits: dict[str, list[dict[str, Any]]]
    rejected: list[dict[str, Any]]
    funnel: list[tuple[str, int, int]]
    token_lengths: dict[str, list[int]]
    pii: dict[str, int] = field(default_factory=dict)
    split_unit: str = "document"


def finalize(
    rows: list[dict[str, Any]],
    *,
    scrub_pii: bool,
    max_tokens: int,
    count: CountFn,
    eval_fraction: float,
    text_eval_fraction: float,
    heldout_fraction: float,
    seed: int,
) -> Finalized:
    """Run the stages over ``rows`` (canonical JSON rows with ``id``, ``source``, ``origin`` and, for
    rows from a text chunk, ``chunk``: a key of that chunk that does not depend on ingest order)."""
    funnel: list[tuple[str, int, int]] = []
    rejected: list[dict[str, Any]] = []
    pii: dict[str, int] = {}
    if scrub_pii:
        rows = [_scrubbed(row, pii) for row in rows]
    lengths = dict(zip((r["id"] for r in rows), _lengths(rows, count), strict=True))
    kept = [r for r in rows if lengths[r["id"]] <= max_tokens]
    for r in rows:
        if lengths[r["id"]] > max_tokens:
            rejected.append(_rejection(r, "length", f"longer than max_tokens ({max_tokens})"))
    funnel.append(("length", len(rows), len(kept)))
    chats = [r for r in kept if "messages" in r]
    unique, dups = dedup_rows(chats, DedupConfig())
    rejected += [_rejection(r, "dedup", r["reason"], duplicate_of=r["duplicate_of"]) for r in dups]
    kept = unique + [r for r in kept if "messages" not in r]
    funnel.append(("dedup", len(chats) + len(kept) - len(unique), len(kept)))
    unit = (
        "document"
        if len({r["source"] for r in kept if r.get("origin") == "llm"}) >= MIN_DOCUMENTS
        else "chunk"
    )
    splits = _split(kept, unit, eval_fraction, text_eval_fraction, heldout_fraction, seed)
    tokens = {name: [lengths[r["id"]] for r in part] for name, part in splits.items()}
    return Finalized(splits, rejected, funnel, tokens, pii, unit)


def _scrubbed(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    def clean(text: str) -> str:
        out, found = scrub(text)
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n
        return out

    if "messages" in row:
        return {**row, "messages": [{**m, "content": clean(m["content"])} for m in row["messages"]]}
    return {**row, "text": clean(row["text"])}


def _lengths(rows: list[dict[str, Any]], count: CountFn) -> list[int]:
    """Tokens per row: the text, or every message's content plus a per-message template allowance."""
    texts = ["\n".join(m["content"] for m in r["messages"]) if "messages" in r else r["text"] for r in rows]
    counted = count(texts)
    return [
        n + (PER_MESSAGE_TOKENS * len(r["messages"]) if "messages" in r else 0)
        for n, r in zip(counted, rows, strict=True)
    ]


def _rejection(row: dict[str, Any], stage: str, reason: str, **extra: Any) -> dict[str, Any]:
    out = {"stage": stage, "reason": reason, "id": row["id"], "source": row.get("source")}
    if "messages" in row:
        out["messages"] = row["messages"]
    else:
        out["text"] = row.get("text")
    return {**out, **extra}


def _bucket(key: str, seed: int) -> float:
    """A stable number in [0, 1) per key: the split never depends on input order."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def _group(row: dict[str, Any], unit: str) -> str:
    """The unit that goes to one side whole: a document, or (the fallback) one chunk of it with the
    questions generated from it. ``chunk`` is a key that does not depend on the order of ingest."""
    if "messages" in row and row.get("origin") != "llm":
        return f"row:{row['id']}"  # a Q&A row or a conversation is a document of its own
    if unit == "chunk" and row.get("chunk"):
        return f"chunk:{row['chunk']}"
    return f"doc:{row['source']}"


def _split(
    rows: list[dict[str, Any]], unit: str, eval_share: float, text_share: float, heldout: float, seed: int
) -> dict[str, list[dict[str, Any]]]:
    chat_groups: set[str] = set()
    text_groups: set[str] = set()
    for row in rows:
        (chat_groups if "messages" in row else text_groups).add(_group(row, unit))
    # A group with questions takes the chat share as a whole, its text chunks too: eval must not
    # ask about text the model trained on. Text-only documents take the text share.
    eval_groups = {g for g in chat_groups if _bucket(g, seed) < eval_share}
    eval_groups |= {g for g in text_groups - chat_groups if _bucket(g, seed) < text_share}
    if eval_share > 0 and not eval_groups & chat_groups and len(chat_groups) >= 2:
        # a tiny dataset: move one whole group (its held-out questions too) so eval is never empty
        eval_groups.add(min(chat_groups, key=lambda g: _bucket(g, seed)))
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "heldout": []}
    for row in sorted(rows, key=lambda r: r["id"]):
        side = "eval" if _group(row, unit) in eval_groups else "train"
        # every wording of one fact goes to one side: a held-out paraphrase of a trained question
        # would measure recall, not knowledge
        held = _bucket(row.get("fact") or row["id"], seed + 1) < heldout
        if side == "train" and row.get("origin") == "llm" and held:
            side = "heldout"
        splits[side].append(row)
    return splits
