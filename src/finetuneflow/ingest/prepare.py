"""Per-file work done in worker processes: read, clean, chunk, scrub, hash and sign.

The main process only matches signatures against the project's index and writes rows, so the
expensive parts (parsing, tokenizing, MinHash) use every core.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetuneflow.ingest.boilerplate import strip_repeated_lines
from finetuneflow.ingest.chunking import SpanFn, chunk_text, hf_span_fn
from finetuneflow.ingest.dedup import exact_key, signatures
from finetuneflow.ingest.domains import collection_info
from finetuneflow.ingest.pii import scrub
from finetuneflow.ingest.readers import read_file
from finetuneflow.records import ReaderError, SourceRecord

if TYPE_CHECKING:
    from finetuneflow.ingest.step import IngestConfig

_CTX: dict[str, Any] = {}  # set once per process by init_worker


@dataclass
class Prepared:
    """A file made ready for storing (picklable, sent back from a worker)."""

    sha256: str = ""
    size: int = 0
    stored_as: str = ""
    units: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sigs: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    failed: bool = False
    boilerplate_lines: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    domain: str | None = None


def span_fn(model_dir: Path) -> SpanFn:
    """Token spans from the model's ``tokenizer.json`` through the Rust tokenizer directly (no
    transformers import in workers); falls back to the transformers tokenizer."""
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        from finetuneflow.models.load import load_tokenizer

        return hf_span_fn(load_tokenizer(model_dir))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()  # documents are longer than the context on purpose: that is why we chunk
    tok.no_padding()

    def spans(text: str) -> list[tuple[int, int]]:
        return tok.encode(text, add_special_tokens=False).offsets  # already a list of (start, end)

    return spans


def init_worker(model_dir: Path, cfg: IngestConfig, raw_dir: Path) -> None:
    """Load the tokenizer once per process; remember where raw copies go."""
    _CTX["spans"] = span_fn(model_dir)
    _CTX["cfg"] = cfg
    _CTX["raw_dir"] = raw_dir


def keep_raw(data: bytes, sha: str, suffix: str) -> Path:
    """Store the file's exact bytes under raw/ by content hash (atomic; a no-op when present)."""
    stored = Path(_CTX["raw_dir"]) / f"{sha[:16]}{suffix.lower()}"
    if not stored.exists():
        tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, stored)
    return stored


def to_units(records: list[SourceRecord], spans: SpanFn, cfg: IngestConfig) -> list[dict[str, Any]]:
    """Records -> chunk rows (text records chunked by tokens, Q&A/conversations whole)."""
    units: list[dict[str, Any]] = []
    for rec in records:
        if rec.kind == "text":
            for c in chunk_text(rec.text, spans, cfg.max_tokens, cfg.overlap, page=rec.page):
                units.append(
                    dict(
                        kind="text",
                        text=c.text,
                        n_tokens=c.n_tokens,
                        page=c.page,
                        line=rec.line,
                        char_start=c.char_start,
                        char_end=c.char_end,
                        messages=None,
                        meta=rec.meta,
                    )
                )
        else:
            units.append(
                dict(
                    kind=rec.kind,
                    text=rec.text,
                    n_tokens=len(spans(rec.text)),
                    page=rec.page,
                    line=rec.line,
                    char_start=None,
                    char_end=None,
                    messages=rec.messages,
                    meta=rec.meta,
                )
            )
    return units


def scrub_units(units: list[dict[str, Any]], counts: Counter[str]) -> None:
    """Replace PII in chunk text and message contents, counting per type."""
    for unit in units:
        unit["text"], found = scrub(unit["text"])
        counts.update(found)
        for msg in unit["messages"] or []:
            msg["content"], _ = scrub(msg["content"])  # same PII as the rendered text: counted once


@lru_cache(maxsize=4096)
def _collection(folder: Path, root: Path) -> dict[str, Any] | None:
    return collection_info(folder / "_", root)


def _tag(units: list[dict[str, Any]], info: dict[str, Any] | None) -> None:
    for unit in units:
        unit["domain"] = info["domain"] if info else None
        if info:
            tags = sorted({*unit["meta"].get("tags", []), *info["tags"]})
            unit["meta"] = {
                **unit["meta"],
                "tags": tags,
                "collection": info["collection"],
                "db": info["db"],
                "space": info["space"],
            }


def prepare_batch(items: list[tuple[Path, Path]]) -> list[Prepared]:
    """:func:`prepare` for several (file, root) pairs, with their MinHash signatures computed in one
    vectorised call (per-call overhead dominates for small files)."""
    cfg: IngestConfig = _CTX["cfg"]
    done = [prepare(path, root, sign=False) for path, root in items]
    texts = [u["text"] for p in done for u in p.units]
    if texts:
        sigs = signatures(texts, cfg.dedup_config())
        at = 0
        for p in done:
            if p.units:
                p.sigs, at = sigs[at : at + len(p.units)], at + len(p.units)
    return done


def prepare(path: Path, root: Path, sign: bool = True) -> Prepared:
    """Everything about one file that does not need the database. Never raises."""
    cfg: IngestConfig = _CTX["cfg"]
    try:
        data = path.read_bytes()
    except OSError as err:
        return Prepared(problems=[f"cannot read: {err}"], failed=True)
    sha = hashlib.sha256(data).hexdigest()
    out = Prepared(sha, len(data), str(keep_raw(data, sha, path.suffix)))
    try:
        result = read_file(path)
        records, out.boilerplate_lines = strip_repeated_lines(result.records)
        out.problems = result.problems
        info = _collection(path.parent, root)
        out.domain = info["domain"] if info else None
        out.units = to_units(records, _CTX["spans"], cfg)
    except (ReaderError, OSError) as err:
        out.problems, out.failed = [str(err)], True
        return out
    except Exception as err:  # a reader bug must not take the whole ingest down
        out.problems, out.failed = [f"internal error while reading ({type(err).__name__}: {err})"], True
        return out
    _tag(out.units, info)
    if cfg.scrub_pii:
        scrub_units(out.units, out.pii)
    out.keys = [exact_key(u["text"]) for u in out.units]
    if sign and out.units:
        out.sigs = signatures([u["text"] for u in out.units], cfg.dedup_config())
    return out
