"""Instruction examples from document chunks through an OpenAI-compatible LLM.

Per chunk: ask for N question/answer pairs (N scaled to the chunk's length, styles and audiences
rotated), parse the answer (programmatic repair first, then one LLM repair), check each pair's shape
and grounding in the chunk, optionally score it with an LLM judge. Every request and response is
returned as a :class:`CallLog` for the audit table; a response already logged under the same key is
reused instead of asked again, which is how an interrupted run resumes. Chunks run concurrently up to
the provider's concurrency; results come back in completion order through ``on_result``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from finetuneflow.config import setting
from finetuneflow.dataset import prompts
from finetuneflow.dataset.llm_json import parse_llm_json
from finetuneflow.dataset.provider import Provider
from finetuneflow.dataset.quality import Pair, grounding, judge_scores, validate_pairs
from finetuneflow.errors import CircuitOpen, LLMJSONError, ProviderError
from finetuneflow.events import Emitter
from finetuneflow.records import Message


@dataclass
class GenerateConfig:
    """How chunks become LLM-written examples."""

    examples_per_chunk: int = setting(0, "Pairs asked per chunk; 0 = scaled to the chunk's length.")
    tokens_per_example: int = setting(120, "With scaling: one pair per this many chunk tokens.")
    max_per_chunk: int = setting(6, "With scaling: at most this many pairs per chunk.")
    min_chunk_tokens: int = setting(32, "Chunks shorter than this are not sent (too little to ask about).")
    follow_up: bool = setting(False, "Ask for a follow-up turn too (two-turn conversations).")
    paraphrases: int = setting(
        0,
        "Other wordings asked per question (the knowledge recipe: 2-3 help a small model learn a fact; "
        "each is a training example of its own, grouped with the original by a fact id that dedup and "
        "the split respect).",
    )
    # Off by default like paraphrases: each variant is one more training example per question (and
    # more LLM output per chunk); the knowledge recipe asks for it: --paraphrases 3 --answer-variants 1.
    answer_variants: int = setting(
        0,
        "Other wordings asked per answer (same facts, different words; the knowledge recipe: 1-2). "
        "Each must pass the grounding check on its own; wordings of questions and answers are paired "
        "round-robin into examples of one fact group.",
    )
    grounding_min: float = setting(0.6, "Share of an answer's content words that must occur in the chunk.")
    judge: bool = setting(False, "Score every pair with an LLM judge (one extra call per chunk).")
    judge_min: float = setting(7.0, "With judge: keep pairs whose mean rubric score (1-10) is at least this.")
    llm_repair: bool = setting(True, "When the output is not JSON even after repair, ask the model once.")
    max_chunks: int = setting(0, "Only the first N eligible chunks (0 = all).")
    preview_chunks: int = setting(4, "Chunks in a preview (spread over documents and lengths).")

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.paraphrases <= 5:
            out.append("paraphrases: must be 0..5")
        if not 0 <= self.answer_variants <= 3:
            out.append("answer_variants: must be 0..3")
        if not 0 <= self.examples_per_chunk <= 20:
            out.append("examples_per_chunk: must be 0 (scaled) to 20")
        if self.tokens_per_example < 16 or self.max_per_chunk < 1:
            out.append("tokens_per_example, max_per_chunk: must be >= 16 and >= 1")
        if not 0 <= self.grounding_min <= 1:
            out.append("grounding_min: must be in [0, 1] (0 turns the check off)")
        if not 1 <= self.judge_min <= 10:
            out.append("judge_min: must be in [1, 10]")
        if not 1 <= self.preview_chunks <= 10:
            out.append("preview_chunks: must be 1..10")
        return out

    def count_for(self, n_tokens: int) -> int:
        if self.examples_per_chunk:
            return self.examples_per_chunk
        return max(1, min(self.max_per_chunk, round(n_tokens / self.tokens_per_example)))


@dataclass
class ChunkIn:
    """A source chunk to generate from."""

    id: int
    source: str
    text: str
    n_tokens: int
    domain: str | None = None


@dataclass
class CallLog:
    """One provider call for the audit log (never holds the API key)."""

    key: str
    purpose: str
    chunk_id: int
    model: str
    request: dict[str, Any]
    response: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 0
    cached: bool = False


@dataclass
class Generated:
    """What one chunk gave: kept pairs, rejected items (with stage and reason) and the calls made."""

    chunk: ChunkIn
    pairs: list[Pair] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    calls: list[CallLog] = field(default_factory=list)
    error: str | None = None
    asked: int = 0

    def reject(self, stage: str, reason: str, pair: Pair | None = None, detail: str = "") -> None:
        item: dict[str, Any] = {"stage": stage, "reason": reason, "chunk_id": self.chunk.id}
        item["source"] = self.chunk.source
        if pair is not None:
            item["messages"] = pair.messages()
        if detail:
            item["detail"] = detail[:500]
        self.rejected.append(item)


def call_key(purpose: str, model: str, messages: list[Message], extra: Any = None) -> str:
    """Identity of a request: the same key means the same question to the same model."""
    blob = json.dumps([purpose, model, messages, extra], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """Asks a provider, answering from earlier runs' logged responses first (the key is
    :func:`call_key`), so a rerun only pays for what is missing."""

    def __init__(self, provider: Provider, model: str, cached: dict[str, str]) -> None:
        self.provider = provider
        self.model = model
        self.cached = cached

    def ask(self, out: Generated, purpose: str, messages: list[Message], schema: dict[str, Any]) -> str:
        """The answer text (cached or fresh); logs the call on ``out``. Raises ProviderError."""
        key = call_key(purpose, self.model, messages)
        if key in self.cached:
            out.calls.append(
                CallLog(key, purpose, out.chunk.id, self.model, {}, self.cached[key], cached=True)
            )
            return self.cached[key]
        try:
            done = self.provider.chat(messages, json_schema=schema)
        except ProviderError as err:
            out.calls.append(
                CallLog(key, purpose, out.chunk.id, self.model, {"messages": messages}, None, str(err))
            )
            raise
        out.calls.append(
            CallLog(
                key,
                purpose,
                out.chunk.id,
                self.model,
                done.request,
                done.text,
                None,
                done.prompt_tokens,
                done.completion_tokens,
                done.seconds,
                done.attempts,
            )
        )
        return done.text


def run_chunk(answers: AnswerCache, chunk: ChunkIn, cfg: GenerateConfig, seed: int = 0) -> Generated:
    """Generate, parse (repairing), validate, ground and optionally judge one chunk's pairs.

    Raises:
        CircuitOpen: the provider gave up; the caller stops the run.
    """
    out = Generated(chunk)
    out.asked = cfg.count_for(chunk.n_tokens)
    messages = prompts.generation_messages(
        chunk.text, out.asked, chunk.id + seed, cfg.follow_up, paraphrases=cfg.paraphrases,
        answer_variants=cfg.answer_variants,
    )  # fmt: skip
    try:
        value = _parsed(answers, out, answers.ask(out, "generate", messages, prompts.EXAMPLES_SCHEMA), cfg)
    except CircuitOpen:
        raise
    except ProviderError as err:
        out.error = f"provider: {err}"
        out.reject("provider", f"provider error ({err.kind})", detail=str(err))
        return out
    if value is None:
        return out
    pairs, problems = validate_pairs(value)
    for problem in problems:
        out.reject("validate", problem)
    pairs = _grounded(out, pairs, cfg)
    out.pairs = _judged(answers, out, pairs, cfg) if cfg.judge and pairs else pairs
    return out


def _parsed(answers: AnswerCache, out: Generated, text: str, cfg: GenerateConfig) -> Any | None:
    """The JSON value of ``text``; one LLM repair attempt when programmatic repair fails."""
    try:
        return parse_llm_json(text)[0]
    except LLMJSONError as err:
        problem = err.reason
    if cfg.llm_repair and text.strip():
        fixed = answers.ask(out, "repair", prompts.repair_messages(text, problem), prompts.EXAMPLES_SCHEMA)
        try:
            return parse_llm_json(fixed)[0]
        except LLMJSONError as err:
            problem = f"{problem}; after one LLM repair: {err.reason}"
    out.error = f"unparseable output: {problem}"
    out.reject("parse", "output is not the requested JSON", detail=f"{problem}: {text[:300]}")
    return None


def _grounded(out: Generated, pairs: list[Pair], cfg: GenerateConfig) -> list[Pair]:
    """The pairs whose answer is grounded in the chunk, each keeping only its grounded answer
    variants (a variant may add what the chunk does not say: it is checked on its own)."""
    kept = []
    for pair in pairs:
        score = grounding(pair.answer_text(), out.chunk.text)
        if score < cfg.grounding_min:
            out.reject("grounding", "answer not grounded in the chunk", pair, f"grounding {score:.2f}")
            continue
        variants = []
        for variant in pair.variants:
            v_score = grounding(variant, out.chunk.text)
            if v_score >= cfg.grounding_min:
                variants.append(variant)
            else:
                alone = Pair(pair.question, variant, pair.follow_up, pair.follow_up_answer)
                out.reject(
                    "grounding", "answer variant not grounded in the chunk", alone, f"grounding {v_score:.2f}"
                )
        kept.append(replace(pair, variants=tuple(variants)))
    return kept


def _judged(answers: AnswerCache, out: Generated, pairs: list[Pair], cfg: GenerateConfig) -> list[Pair]:
    listed = [(p.question, p.answer_text()) for p in pairs]
    try:
        text = answers.ask(
            out, "judge", prompts.judge_messages(out.chunk.text, listed), prompts.SCORES_SCHEMA
        )
        scores = judge_scores(parse_llm_json(text)[0], len(pairs))
    except CircuitOpen:
        raise
    except (ProviderError, LLMJSONError) as err:
        for pair in pairs:
            out.reject("judge", "judge failed", pair, str(err))
        return []
    kept = []
    for pair, score in zip(pairs, scores, strict=True):
        if score is None:
            out.reject("judge", "judge gave no score", pair)
        elif score < cfg.judge_min:
            out.reject("judge", f"judge score below {cfg.judge_min:g}", pair, f"score {score:.1f}")
        else:
            kept.append(pair)
    return kept


def eligible(chunks: list[ChunkIn], cfg: GenerateConfig) -> list[ChunkIn]:
    """Chunks long enough to ask about, in order, cut to ``max_chunks``."""
    out = [c for c in chunks if c.n_tokens >= cfg.min_chunk_tokens]
    return out[: cfg.max_chunks] if cfg.max_chunks else out


def pick_preview(chunks: list[ChunkIn], k: int) -> list[ChunkIn]:
    """``k`` representative chunks: spread over documents first, then over lengths (quantiles)."""
    by_length = sorted(chunks, key=lambda c: (c.n_tokens, c.id))
    if len(by_length) <= k:
        return by_length
    picked: list[ChunkIn] = []
    sources: set[str] = set()
    for q in range(k):
        target = round(q * (len(by_length) - 1) / max(1, k - 1))
        # nearest chunk to the quantile whose document is not taken yet, else the quantile itself
        order = sorted(range(len(by_length)), key=lambda i: abs(i - target))
        free = [by_length[i] for i in order if by_length[i] not in picked]
        choice = next((c for c in free if c.source not in sources), free[0])
        picked.append(choice)
        sources.add(choice.source)
    return sorted(picked, key=lambda c: c.id)


def generate(
    chunks: list[ChunkIn],
    answers: AnswerCache,
    cfg: GenerateConfig,
    on_result: Callable[[Generated], None],
    emit: Emitter,
    seed: int = 0,
) -> str | None:
    """Run every chunk through :func:`run_chunk`, at most the provider's concurrency at a time;
    ``on_result`` gets each result as it completes (in this thread). Returns None when all chunks
    ran, else why the run stopped (the circuit opened). Interrupting (Ctrl-C) keeps what was done."""
    # Twice as many threads as request slots: while one thread parses and checks its answer, another
    # already waits on the provider's semaphore, so a slot never idles between requests. The
    # semaphore (not the thread count) is what bounds the requests in flight.
    workers = 2 * max(1, answers.provider.cfg.concurrency)
    todo = iter(chunks)
    progress = [0]
    with ThreadPoolExecutor(workers, thread_name_prefix="ftf-gen") as pool:
        running: set[Future[Generated]] = set()
        try:
            while True:
                # Only `workers` chunks started at a time, so a stop leaves few half-done.
                while len(running) < workers and (chunk := next(todo, None)) is not None:
                    running.add(pool.submit(run_chunk, answers, chunk, cfg, seed))
                if not running:
                    return None
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                stop = _deliver(finished, on_result, emit, progress, len(chunks))
                if stop:  # the others fail fast now; keep what they finished
                    _deliver(wait(running).done, on_result, emit, progress, len(chunks))
                    return stop
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _deliver(
    finished: set[Future[Generated]],
    on_result: Callable[[Generated], None],
    emit: Emitter,
    progress: list[int],
    total: int,
) -> str | None:
    """Hand finished chunks to ``on_result``; returns the circuit's reason if one stopped the run."""
    stop = None
    for future in finished:
        try:
            result = future.result()
        except CircuitOpen as err:
            stop = str(err)
            continue
        on_result(result)
        progress[0] += 1
        emit("chunks", progress[0], total)
    return stop
