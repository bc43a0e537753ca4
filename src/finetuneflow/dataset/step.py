"""The dataset step: generate (LLM) and build (the files every trainer reads) over a project's pool.

Both cores take what they work on, never names: a way to open database sessions, the project's id,
the dataset folder and a token counter. ``api.build_dataset`` and ``api.generate_dataset`` resolve a
project name into those, so a CLI command, a REST route or a queue job all call the same cores.
Progress goes out as events. Generation commits each chunk's result as it completes, so an
interrupted run keeps its work and a rerun only asks for what is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from finetuneflow.config import to_dict
from finetuneflow.dataset import formats, pool
from finetuneflow.dataset.convert import DatasetConfig, Unit, make_examples
from finetuneflow.dataset.finalize import CountFn, finalize
from finetuneflow.dataset.generate import (
    AnswerCache,
    GenerateConfig,
    Generated,
    eligible,
    generate,
    pick_preview,
)
from finetuneflow.dataset.provider import Provider, ProviderConfig
from finetuneflow.dataset.stats import compute_stats, plot_token_histogram, write_rejected
from finetuneflow.events import Emitter, EventSink
from finetuneflow.state import schema
from finetuneflow.state.datasets import dataset_hashes, split_path, write_jsonl

SessionScope = Callable[[], AbstractContextManager[Session]]
"""Opens a database session that commits when its block ends without error (``state.session_scope``).
The steps open several: generation commits once per chunk, so a crash keeps what is done."""


@dataclass
class GenerationReport:
    """What a generation run did, chunk by chunk and in total."""

    chunks: int = 0
    asked: int = 0
    kept: int = 0
    added: int = 0
    reused_calls: int = 0
    new_calls: int = 0
    failed_chunks: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)  # preview only

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "examples"}
        out["rejected"] = dict(self.rejected)
        return out


def generate_step(
    sessions: SessionScope,
    project_id: int,
    dataset: DatasetConfig,
    gen: GenerateConfig,
    provider_cfg: ProviderConfig,
    on_event: EventSink | None = None,
    *,
    preview: bool = False,
    provider: Provider | None = None,
) -> GenerationReport:
    """Generate examples for the project's chunks (or a preview of a few) into the dataset's pool.

    Raises:
        ValueError: the project has no text chunks long enough to ask about.
    """
    emit = Emitter("generate", on_event)
    with sessions() as s:
        chunks = eligible(pool.load_chunks(s, project_id, dataset.domain), gen)
        cached = pool.load_cache(s, project_id, dataset.name)
    if preview:
        chunks = pick_preview(chunks, gen.preview_chunks)
    if not chunks:
        raise ValueError(
            f"no text chunks of at least {gen.min_chunk_tokens} tokens in the project"
            + (f" (domain {dataset.domain!r})" if dataset.domain else "")
            + "; run `ftf ingest` on your documents first"
        )
    report = GenerationReport(chunks=len(chunks))
    own = provider is None
    client = provider or Provider(provider_cfg)
    try:
        answers = AnswerCache(client, client.cfg.model, cached)
        emit("chunks", 0, len(chunks), message=f"{len(chunks)} chunks, {len(cached)} answers logged before")

        def store(result: Generated) -> None:
            _tally(report, result)
            if preview:
                report.examples += [
                    {"source": result.chunk.source, "messages": p.messages(dataset.system_prompt)}
                    for p in result.pairs
                ]
            with sessions() as s2:  # one commit per chunk: a crash keeps what is done
                added, _ = pool.store_generated(s2, project_id, dataset.name, result, dataset.system_prompt)
            report.added += added

        report.stopped = generate(chunks, answers, gen, store, emit)
    finally:
        if own:
            client.close()
    return report


def _tally(report: GenerationReport, result: Generated) -> None:
    report.asked += result.asked
    report.kept += len(result.pairs)
    report.reused_calls += sum(1 for c in result.calls if c.cached)
    report.new_calls += sum(1 for c in result.calls if not c.cached)
    report.failed_chunks += result.error is not None
    for item in result.rejected:
        report.rejected[f"{item['stage']}: {item['reason']}"] += 1


def build_step(
    sessions: SessionScope,
    project_id: int,
    out_dir: Path,
    cfg: DatasetConfig,
    count: CountFn,
    on_event: EventSink | None = None,
) -> dict[str, Any]:
    """Convert the project's chunks, merge the pool's live examples, filter, split and write the
    dataset into ``out_dir``; ``count`` gives the token length of each text (a batch at a time).
    Returns the manifest, with ``path`` and ``stats``.

    Raises:
        ValueError: nothing to build (no usable chunks or examples).
    """
    emit = Emitter("dataset", on_event)
    with sessions() as s:
        units = _units(s, project_id)
        documents = Counter(u.source for u in units)
        drops: Counter[str] = Counter()
        converted = make_examples(units, cfg, drops)
        pool.sync_converted(s, project_id, cfg.name, converted)
        s.flush()
        rows = pool.pool_rows(s, project_id, cfg.name)
        live, review_drops = _sift_pool(rows, _chunk_keys(s, project_id), cfg)
    if not live:
        raise _nothing_to_build(len(rows), review_drops)
    emit("filter", 0, len(live), message=f"{len(live)} candidate examples")
    done = finalize(
        live,
        scrub_pii=cfg.scrub_pii,
        max_tokens=cfg.max_tokens,
        count=count,
        eval_fraction=cfg.eval_fraction,
        text_eval_fraction=cfg.text_eval_fraction,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.seed,
    )
    rejected = review_drops + done.rejected
    funnel = [("pool", len(rows), len(live)), *done.funnel]
    manifest = _write(out_dir, cfg, done.splits, rejected, drops, done.pii, done.split_unit)
    stats = compute_stats(
        done.splits, rejected, done.token_lengths, dict(documents), None, funnel, token_limit=cfg.max_tokens
    )
    (out_dir / "stats.json").write_text(json.dumps(stats.to_json(), indent=2, ensure_ascii=False))
    plot_token_histogram(done.token_lengths, out_dir / "token_lengths.png", limit=cfg.max_tokens)
    _record_splits(sessions, project_id, cfg.name, done.splits)
    emit("filter", len(live), len(live), message="done")
    return {**manifest, "path": str(out_dir), "stats": stats}


def _sift_pool(
    rows: list[schema.Example], chunks: dict[int | None, str], cfg: DatasetConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pool's rows as build records: those the build keeps, and the others with the reason
    (stage 'pool' of the funnel)."""
    live: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for row in rows:
        record = {**pool.as_record(row), "chunk": chunks.get(row.chunk_id)}
        reason = pool.drop_reason(row, cfg)
        if reason is None:
            live.append(record)
        else:
            dropped.append({"stage": "pool", "reason": reason, **record})
    return live, dropped


def _nothing_to_build(n_rows: int, dropped: list[dict[str, Any]]) -> ValueError:
    if not n_rows:
        return ValueError(
            "nothing to build: the project has no usable chunks or examples; "
            "run `ftf ingest` (and `ftf dataset generate`) first"
        )
    reasons = "; ".join(f"{n} {why}" for why, n in Counter(r["reason"] for r in dropped).most_common(3))
    return ValueError(
        f"nothing to build: all {n_rows} examples are left out ({reasons}); see `ftf dataset review`"
    )


def _units(s: Session, project_id: int) -> list[Unit]:
    from sqlalchemy import select

    files = {f.id: f.path for f in s.scalars(select(schema.File).where(schema.File.project_id == project_id))}
    chunks = s.scalars(
        select(schema.Chunk)
        .where(schema.Chunk.project_id == project_id, schema.Chunk.drop_reason.is_(None))
        .order_by(schema.Chunk.file_id, schema.Chunk.idx)
    ).all()
    return [
        Unit(c.kind, files[c.file_id], c.text, c.n_tokens, c.messages, c.id, c.page, c.meta, c.domain)
        for c in chunks
    ]


def _chunk_keys(s: Session, project_id: int) -> dict[int | None, str]:
    """Chunk id -> ``path#position``: what the split groups by, the same whatever order files were
    ingested in (database ids are not)."""
    from sqlalchemy import select

    query = (
        select(schema.Chunk.id, schema.Chunk.idx, schema.File.path)
        .join(schema.File, schema.File.id == schema.Chunk.file_id)
        .where(schema.Chunk.project_id == project_id)
    )
    return {chunk_id: f"{path}#{idx}" for chunk_id, idx, path in s.execute(query)}


def _write(
    out_dir: Path,
    cfg: DatasetConfig,
    splits: dict[str, list[dict[str, Any]]],
    rejected: list[dict[str, Any]],
    drops: Counter[str],
    pii: dict[str, int],
    split_unit: str,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for kind in ("chat", "text"):
        for split, rows in splits.items():
            if split == "heldout" and kind == "text":
                continue
            clean = [_public(r) for r in rows if ("messages" in r) == (kind == "chat")]
            counts[f"{kind}/{split}"] = write_jsonl(split_path(out_dir, kind, split), clean)
    write_rejected(out_dir / "rejected.jsonl", rejected)
    exported = _export(out_dir, cfg, splits)
    manifest = {
        "name": cfg.name,
        "config": to_dict(cfg),
        "counts": counts,
        "split_unit": split_unit,
        "dropped": dict(drops) | dict(Counter(f"{r['stage']}: {r['reason']}" for r in rejected)),
        "pii_replaced": pii,
        "sources": dict(sorted(Counter(r["source"] for part in splits.values() for r in part).items())),
        "exports": exported,
        "files": dataset_hashes(out_dir),
        "load_with": 'datasets.load_dataset("json", data_files={"train": "chat/train.jsonl", '
        '"eval": "chat/eval.jsonl"})',
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


def _public(row: dict[str, Any]) -> dict[str, Any]:
    # a chat row's chunk_id: the ingested chunk it was written from (a Q&A row: its own), so
    # evaluation can tell when the memory recalls a question's own source and answers open book
    keep = ("id", "source", "chunk_id", "domain", "fact", "messages") if "messages" in row else TEXT_KEYS
    return {k: row[k] for k in keep if row.get(k) is not None}


TEXT_KEYS = ("id", "source", "domain", "text")


def _export(out_dir: Path, cfg: DatasetConfig, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every requested format, per split, under exports/; plus LLaMA-Factory's dataset_info.json."""
    root = out_dir / "exports"
    entries: list[tuple[str, str]] = []
    problems: dict[str, list[str]] = {}
    for fmt in cfg.formats:
        for split in ("train", "eval", "heldout"):
            rows, skipped = formats.export_rows([_public(r) for r in splits[split]], fmt)
            formats.write_export(rows, root, fmt, split)
            entries.append((fmt, split))
            if skipped:
                problems[f"{fmt}/{split}"] = skipped[:20]
    (root / "dataset_info.json").write_text(json.dumps(formats.dataset_info(entries), indent=2))
    return {"folder": str(root), "formats": list(cfg.formats), "skipped": problems}


def _record_splits(
    sessions: SessionScope, project_id: int, dataset: str, splits: dict[str, list[dict[str, Any]]]
) -> None:
    from sqlalchemy import update

    with sessions() as s:
        s.execute(
            update(schema.Example)
            .where(schema.Example.project_id == project_id, schema.Example.dataset == dataset)
            .values(split="")
        )
        for split, rows in splits.items():
            ids = [r["pool_id"] for r in rows]
            for start in range(0, len(ids), 500):
                s.execute(
                    update(schema.Example)
                    .where(schema.Example.id.in_(ids[start : start + 500]))
                    .values(split=split)
                )
