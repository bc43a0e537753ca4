"""Compare the base model with the tuned one on the eval split of the run's dataset.

Both are the same loaded weights: the adapter switched off is exactly the base model, so the
comparison costs one model load and cannot mix up tokenizers or templates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow import hardware
from finetuneflow.config import setting
from finetuneflow.events import Emitter, EventSink
from finetuneflow.models.chat import encode_rows
from finetuneflow.models.generate import generate_reply
from finetuneflow.models.load import Tuned, load_tuned
from finetuneflow.models.loss import mean_loss
from finetuneflow.state import runs as rf
from finetuneflow.state.datasets import read_split


@dataclass
class EvalConfig:
    """What to compare and how much to generate."""

    answers: int = setting(8, "Eval-split questions answered greedily by both models, shown side by side.")
    max_new_tokens: int = setting(96, "Longest generated answer, in tokens.")
    batch_size: int = setting(4, "Packed rows per forward pass when computing losses.")
    threads: int = setting(0, "CPU threads for torch (0 = all available cores).")

    def problems(self) -> list[str]:
        bad = [n for n in ("answers", "max_new_tokens", "batch_size", "threads") if getattr(self, n) < 0]
        return [f"{n}: must be >= 0" for n in bad] + (
            ["batch_size: must be >= 1"] if self.batch_size == 0 else []
        )


def evaluate(run_dir: Path, cfg: EvalConfig, on_event: EventSink | None = None) -> dict[str, Any]:
    """Eval loss/perplexity of base and tuned per example kind, plus greedy answers; writes evaluation.json.

    Raises:
        FileNotFoundError: the run has no trained adapter yet.
    """
    emit = Emitter("evaluate", on_event)
    if not (run_dir / rf.CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} has no trained adapter; run `ftf train` first")
    run_cfg = rf.read_json(run_dir / rf.CONFIG)
    trained = run_cfg["train"]  # the run's own settings: same row length and precision
    hardware.setup_threads(cfg.threads)
    device = run_cfg["device"]
    amp = partial(hardware.autocast, device, hardware.autocast_dtype(device, trained["precision"]))
    emit("load", message="loading the base and the tuned model")
    tuned = load_tuned(run_dir, device)
    model, tokenizer = tuned.model, tuned.tokenizer
    dataset = Path(run_cfg["dataset"])
    losses: dict[str, Any] = {}
    for kind in ("chat", "text"):
        records = read_split(dataset, "eval", (kind,))
        if not records:
            continue
        rows, counts = encode_rows(tokenizer, records, trained["max_len"])
        emit("loss", message=f"{kind}: {counts['examples']} eval-split examples")
        with tuned.base() as base_model:
            base = mean_loss(base_model, rows, device, cfg.batch_size, amp)
        after = mean_loss(model, rows, device, cfg.batch_size, amp)
        losses[kind] = _loss_entry(base, after, counts)
    answers = _side_by_side(
        tuned, read_split(dataset, "eval", ("chat",))[: cfg.answers], cfg, emit
    )
    result = {"losses": losses, "answers": answers}
    (run_dir / rf.EVALUATION).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    emit("done", 1, 1, message=f"wrote {run_dir / rf.EVALUATION}")
    return result


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


def _side_by_side(
    tuned: Tuned, records: list[dict[str, Any]], cfg: EvalConfig, emit: Emitter
) -> list[dict[str, str]]:
    out = []
    for i, rec in enumerate(records):
        messages = rec["messages"]
        last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
        prompt = messages[:last]
        with tuned.base() as base_model:
            base = generate_reply(base_model, tuned.tokenizer, prompt, cfg.max_new_tokens)
        answer = generate_reply(tuned.model, tuned.tokenizer, prompt, cfg.max_new_tokens)
        out.append(
            {
                "question": prompt[-1]["content"],
                "reference": messages[last]["content"],
                "base": base,
                "tuned": answer,
            }
        )
        emit("answers", i + 1, len(records))
    return out
