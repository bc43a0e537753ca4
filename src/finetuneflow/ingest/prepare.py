"""Per-file work done in worker processes: read, clean, chunk, scrub, hash and sign.

The main process only matches signatures against the project's index and writes rows, so the
expensive parts (parsing, tokenizing, MinHash) use every core.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.boilerplate import strip_repeated_lines
from finetuneflow.ingest.chunking import WINDOW_CHARS, SpanFn, chunk_stream, hf_span_fn
from finetuneflow.ingest.domains import collection_info
from finetuneflow.ingest.limits import applied
from finetuneflow.ingest.raw import PACK_MAX_FILE, keep_file, keep_pack
from finetuneflow.ingest.readers import read_file
from finetuneflow.ingest.wordspans import word_span_fn
from finetuneflow.records import SourceRecord
from finetuneflow.text.dedup import dedup_keys
from finetuneflow.text.pii import scrub

if TYPE_CHECKING:
    from finetuneflow.ingest.config import IngestConfig

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
    notes: list[str] = field(default_factory=list)  # the reader's notes (OCRed pages), nothing lost
    failed: bool = False
    boilerplate_lines: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    domain: str | None = None
    info: dict[str, Any] | None = None  # the collection's _collection.json, when in one


CountFn = Callable[[list[str]], list[int]]
"""Token counts of several texts (no offsets: the cheap question "does it fit?")."""


def token_fns(model_dir: Path) -> tuple[SpanFn, CountFn]:
    """Token spans and batch counts from the model's ``tokenizer.json`` through the Rust tokenizer
    directly (no transformers import in workers); falls back to the transformers tokenizer.

    Counting without offsets (``encode_batch_fast``) costs ~60% of a full encode, and most
    documents fit one chunk, so spans are only computed for the ones that must be cut.
    """
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        from finetuneflow.models.load import load_tokenizer

        hf = load_tokenizer(model_dir)

        def hf_counts(texts: list[str]) -> list[int]:
            return [len(ids) for ids in hf(texts, add_special_tokens=False, verbose=False)["input_ids"]]

        return hf_span_fn(hf), hf_counts
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()  # documents are longer than the context on purpose: that is why we chunk
    tok.no_padding()

    def spans(text: str) -> list[tuple[int, int]]:
        return tok.encode(text, add_special_tokens=False).offsets  # already a list of (start, end)

    by_word = word_span_fn(tok, tokenizer_file)  # same spans, ~3x cheaper, for byte-level BPE

    def counts(texts: list[str]) -> list[int]:
        return [len(e) for e in tok.encode_batch_fast(texts, add_special_tokens=False)] if texts else []

    return by_word or spans, counts


def init_worker(model_dir: Path, cfg: IngestConfig, raw_dir: Path, pooled: bool = False) -> None:
    """Load the tokenizer once per process; remember where raw copies go.

    In a pool there is one worker per core already, so the tokenizer's own threads would only
    fight them for the same cores.
    """
    if pooled:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _CTX["spans"], _CTX["counts"] = token_fns(model_dir)
    _CTX["cfg"] = cfg
    _CTX["raw_dir"] = raw_dir


def to_units(
    records: list[SourceRecord], counts: list[int | None], cfg: IngestConfig
) -> list[dict[str, Any]]:
    """Records -> chunk rows: text records chunked by tokens, Q&A/conversations whole.

    ``counts`` are the token counts of each record's stripped text (see :func:`_count_records`),
    None for a text too long to count at once (it is chunked in windows).
    """
    units: list[dict[str, Any]] = []
    for rec, n_tokens in zip(records, counts, strict=True):
        if rec.kind != "text":
            units.append(_unit(rec, rec.text, n_tokens or 0, None, None, None))
        elif n_tokens is not None and n_tokens <= cfg.max_tokens:  # the common case: one chunk
            body = rec.text.strip()
            if body:
                start = len(rec.text) - len(rec.text.lstrip())
                units.append(_unit(rec, body, n_tokens, rec.page, start, start + len(body)))
        else:
            units += text_units(rec, [rec.text], cfg)
    return units


def text_units(rec: SourceRecord, segments: Iterable[str], cfg: IngestConfig) -> Iterator[dict[str, Any]]:
    """The chunk rows of a text record whose text is ``"".join(segments)``, made in windows."""
    window = min(cfg.limits().segment, WINDOW_CHARS)
    chunks = chunk_stream(segments, _CTX["spans"], cfg.max_tokens, cfg.overlap, rec.page, window)
    for c in chunks:
        yield _unit(rec, c.text, c.n_tokens, c.page, c.char_start, c.char_end)


def count_tokens(records: list[SourceRecord], cfg: IngestConfig) -> list[int | None]:
    """Token counts of the records' bodies in one batch; None for a text over a segment (it is
    chunked in windows, never tokenized whole)."""
    limit = cfg.limits().segment
    bodies = [rec.text.strip() if rec.kind == "text" else rec.text for rec in records]
    counting = [rec.kind != "text" or len(body) <= limit for rec, body in zip(records, bodies, strict=True)]
    counted = iter(_CTX["counts"]([body for body, yes in zip(bodies, counting, strict=True) if yes]))
    return [next(counted) if yes else None for yes in counting]


def _unit(
    rec: SourceRecord, text: str, n_tokens: int, page: int | None, start: int | None, end: int | None
) -> dict[str, Any]:
    return dict(
        kind=rec.kind,
        text=text,
        n_tokens=n_tokens,
        page=page if rec.kind == "text" else rec.page,
        line=rec.line,
        char_start=start,
        char_end=end,
        messages=rec.messages,
        meta=rec.meta,
    )


def scrub_units(units: list[dict[str, Any]], counts: Counter[str]) -> None:
    """Replace PII in chunk text and message contents, counting per type."""
    for unit in units:
        unit["text"], found = scrub(unit["text"])
        counts.update(found)
        for msg in unit["messages"] or []:
            msg["content"], _ = scrub(msg["content"])  # same PII as the rendered text: counted once


@lru_cache(maxsize=4096)
def collection_of(folder: Path, root: Path) -> dict[str, Any] | None:
    return collection_info(folder / "_", root)


def tag_units(units: list[dict[str, Any]], info: dict[str, Any] | None) -> None:
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
    """Everything about several (file, root) pairs that does not need the database. Never raises.

    Files are read one by one, then token counting, exact keys and MinHash signing run once for
    the whole batch (per-call overhead dominates for small files).
    """
    cfg: IngestConfig = _CTX["cfg"]
    small: list[tuple[str, str, bytes]] = []  # raw copies that go into this batch's pack
    read = [_read(path, root, small) for path, root in items]
    stored = keep_pack(Path(_CTX["raw_dir"]), small)
    for out, _ in read:
        out.stored_as = out.stored_as or stored.get(out.sha256, "")
    counts = iter(count_tokens([rec for _, recs in read for rec in recs], cfg))
    done = []
    for out, records in read:
        n_tokens = [next(counts) for _ in records]
        if not out.failed:
            _finish(out, records, n_tokens, cfg)
        done.append(out)
    texts = [u["text"] for p in done for u in p.units]
    if texts:
        keys, sigs = dedup_keys(texts, cfg.dedup_config())
        at = 0
        for p in done:
            if p.units:
                p.keys, p.sigs, at = (
                    keys[at : at + len(p.units)],
                    sigs[at : at + len(p.units)],
                    at + len(p.units),
                )
    return done


def _read(path: Path, root: Path, small: list[tuple[str, str, bytes]]) -> tuple[Prepared, list[SourceRecord]]:
    """Read, keep a raw copy (large files now, small ones appended to ``small`` for the batch's
    pack), strip repeated header/footer lines, find the domain. Never raises."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return Prepared(problems=[f"cannot read: {err}"], failed=True), []
    sha = hashlib.sha256(data).hexdigest()
    out = Prepared(sha, len(data))
    if len(data) > PACK_MAX_FILE:
        out.stored_as = keep_file(Path(_CTX["raw_dir"]), data, sha, path.suffix)
    else:
        small.append((sha, path.suffix, data))
    try:
        with applied(_CTX["cfg"].limits()):
            result = read_file(path)
        records, out.boilerplate_lines = strip_repeated_lines(result.records)
        out.problems = result.problems
        out.notes = result.notes
        out.info = collection_of(path.parent, root)
    except (ReaderError, OSError) as err:
        out.problems, out.failed = [str(err)], True
        return out, []
    except Exception as err:  # a reader bug must not take the whole ingest down
        out.problems, out.failed = [f"internal error while reading ({type(err).__name__}: {err})"], True
        return out, []
    out.domain = out.info["domain"] if out.info else None
    return out, records


def _finish(
    out: Prepared, records: list[SourceRecord], n_tokens: list[int | None], cfg: IngestConfig
) -> None:
    """Chunk, tag and scrub a file's records (keys and signatures follow for the whole batch)."""
    try:
        out.units = to_units(records, n_tokens, cfg)
    except Exception as err:  # a chunker bug on one file must not take the whole ingest down
        out.problems, out.failed = [f"internal error while chunking ({type(err).__name__}: {err})"], True
        return
    tag_units(out.units, out.info)
    if cfg.scrub_pii:
        scrub_units(out.units, out.pii)
