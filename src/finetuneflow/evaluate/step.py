"""Does the tuned model answer better than the base? The evaluation step.

Reads top to bottom: load the run's model once, measure eval losses, ask every question set
(:mod:`~finetuneflow.evaluate.sets`) of both models and score the answers
(:mod:`~finetuneflow.evaluate.answers`), run the forgetting check, decide the verdict
(:mod:`~finetuneflow.evaluate.summary`) and write ``evaluation.json`` into the run.

With a memory (``retrieve``, passed in by the api layer: a step never imports the memory), every
set is also answered by base+memory and tuned+memory (:mod:`~finetuneflow.evaluate.with_memory`),
and two more verdicts say whether the memory helps each model.

Base and tuned are the same loaded weights: the adapter switched off is exactly the base model, so
the comparison costs one model load and cannot mix up tokenizers or templates.

``evaluation.json``::

    {"format": 2, "config": {...EvalConfig...},
     "verdict": {"verdict": "better"|"same"|"worse", "sentence", "n", "base", "tuned", "diff",
                 "low", "high", "metric", "confidence", "resamples", "seed", "sets"} | null,
     "memory_verdicts": {"base_memory"|"tuned_memory": {... as verdict ...}} | null,
     "sets": {"eval"|"heldout"|"recall"|"general": {"label", "questions", "comparison",
              "memory_comparisons": {"base_memory"|"tuned_memory": {...}} | null,
              "means": {"base"|"tuned"[|"base_memory"|"tuned_memory"]: {"em", "f1", "rouge_l",
                        "contains", "nll", ["judge"]}},
              "rows": [... see answers.py ...]}},
     "forgetting": {"base_perplexity", "tuned_perplexity", "change", ...} | null,
     "losses": {"chat"|"text": {"examples", "base_loss", "tuned_loss", ...}},
     "judge": {"model", "system", "template", ...} | null}
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow import allocator, hardware
from finetuneflow.config import to_dict
from finetuneflow.evaluate.answers import Bench, answer_set
from finetuneflow.evaluate.config import EvalConfig
from finetuneflow.evaluate.forgetting import text_perplexity
from finetuneflow.evaluate.judge import ChatClient, Judge
from finetuneflow.evaluate.sets import question_sets
from finetuneflow.evaluate.summary import summarise
from finetuneflow.evaluate.with_memory import Retrieve
from finetuneflow.events import Emitter, Event, EventSink
from finetuneflow.models.chat import encode_rows
from finetuneflow.models.load import Tuned, load_tuned
from finetuneflow.models.loss import mean_loss
from finetuneflow.state import runs as rf
from finetuneflow.state.datasets import read_split

__all__ = ["EvalConfig", "evaluate"]
FORMAT = 2  # 1: losses and unscored answers only


def evaluate(
    run_dir: Path,
    cfg: EvalConfig,
    on_event: EventSink | None = None,
    judge: ChatClient | None = None,
    retrieve: Retrieve | None = None,
) -> dict[str, Any]:
    """Compare base and tuned on the run's questions; writes and returns ``evaluation.json``.

    ``judge`` is the chat client that grades answers when ``cfg.judge`` is on. ``retrieve`` gives
    the memory items for a question (best first); with it (and ``cfg.memory`` not off) every set is
    also answered with memories in the prompt.

    Raises:
        FileNotFoundError: the run has no trained adapter yet.
        ValueError: ``cfg.judge`` is on and no ``judge`` client was given; ``cfg.memory`` is on and
            no ``retrieve`` was given.
    """
    emit = Emitter("evaluate", on_event)
    if not (run_dir / rf.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} has no trained adapter; run `ftf train` first")
    if cfg.judge and judge is None:
        raise ValueError(
            "judge: on, but no LLM provider was given; set the provider (e.g. --model) or turn it off"
        )
    if cfg.memory == "on" and retrieve is None:
        raise ValueError("memory: on, but no memory was given to recall from; set memory: auto or off")
    if cfg.memory == "off":
        retrieve = None
    run_cfg = rf.read_json(run_dir / rf.CONFIG)
    trained = run_cfg["train"]  # the run's own settings: same row length and precision
    device = run_cfg["device"]
    threads = hardware.setup_threads(cfg.threads)
    if cfg.threads == 0 and device == "cpu":  # follow the load, as training does
        emit = Emitter("evaluate", _adapting(hardware.CoreShare(threads, every_s=2.0), on_event))
    amp = partial(hardware.autocast, device, hardware.autocast_dtype(device, trained["precision"]))
    emit("load", message="loading the base and the tuned model")
    # under jemalloc (a worker's jobs) its default decay made this slower than glibc's malloc
    with allocator.keep_freed_pages():
        tuned = load_tuned(run_dir, device)
        dataset = Path(run_cfg["dataset"])
        losses = _losses(tuned, dataset, trained["max_len"], cfg.batch_size, amp, emit)
        grader = Judge(judge) if cfg.judge and judge is not None else None
        bench = Bench(tuned, cfg, trained["max_len"], amp, grader, emit, retrieve)
        rows = {name: answer_set(name, qs, bench) for name, qs in question_sets(dataset, cfg).items() if qs}
        forgetting = None
        if cfg.forgetting:
            emit("forgetting", message="perplexity on general text")
            forgetting = text_perplexity(tuned, trained["max_len"], cfg.batch_size, amp)
    summary = summarise(rows, resamples=cfg.resamples, seed=cfg.seed, confidence=cfg.confidence)
    result = {
        "format": FORMAT,
        "config": to_dict(cfg),
        **summary,
        "forgetting": forgetting,
        "losses": losses,
        "judge": grader.record() if grader else None,
    }
    rf.write_json(run_dir / rf.EVALUATION, result)
    emit("done", 1, 1, message=f"wrote {run_dir / rf.EVALUATION}")
    return result


def _adapting(cores: hardware.CoreShare, on_event: EventSink | None) -> EventSink:
    """``on_event`` that first re-fits torch's threads to the free cores: every progress event
    (one per batch of answers) is a point to change them. Two threads on a 2-core machine with
    other work running took ``make demo``'s evaluation from about 1 minute to 7.7 (OpenMP threads
    wait at every barrier for a peer the scheduler has put off its core)."""
    cores.settle()

    def sink(event: Event) -> None:
        cores.adapt()
        if on_event is not None:
            on_event(event)

    return sink


def _losses(
    tuned: Tuned, dataset: Path, max_len: int, batch_size: int, amp: Any, emit: Emitter
) -> dict[str, Any]:
    """Eval-split loss and perplexity of base and tuned, per example kind (chat, text)."""
    losses: dict[str, Any] = {}
    for kind in ("chat", "text"):
        records = read_split(dataset, "eval", (kind,))
        if not records:
            continue
        rows, counts = encode_rows(tuned.tokenizer, records, max_len)
        emit("loss", message=f"{kind}: {counts['examples']} eval-split examples")
        with tuned.base() as base_model:
            base = mean_loss(base_model, rows, tuned.device, batch_size, amp)
        after = mean_loss(tuned.model, rows, tuned.device, batch_size, amp)
        losses[kind] = _loss_entry(base, after, counts)
    return losses


def _loss_entry(base: float, tuned: float, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "examples": counts["examples"],
        "supervised_tokens": counts["supervised_tokens"],
        "base_loss": round(base, 4),
        "tuned_loss": round(tuned, 4),
        "base_perplexity": round(math.exp(min(base, 50)), 2),
        "tuned_perplexity": round(math.exp(min(tuned, 50)), 2),
        "improvement": round(1 - tuned / base, 4) if base > 0 else 0.0,
    }
