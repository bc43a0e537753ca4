"""The knowledge goal's stopping rule: does the model answer its own training questions yet, and
has it started to forget ordinary text?

Every ``recall.every`` steps the loop asks a seeded sample of training questions (greedy, the same
draw evaluation's recall set makes: :func:`finetuneflow.text.questions.sample`) and scores the
answers by token F1 against the references. Loss keeps falling long after answers stop changing,
so the run is judged on answers. Beside it, the forgetting guard measures the loss on general text
held back from the replay sample (``train/data/replay.md``; evaluation's forgetting check measures
on a text of its own, ``evaluate/data/general_text.md``, which training never sees). A probe whose
perplexity rose by more than ``max_forgetting`` ends the run and never counts as the best; the best
checkpoint (highest F1 within the guard) is what the run keeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any

from finetuneflow import hardware
from finetuneflow.models.chat import Row, encode_rows
from finetuneflow.models.generate import generate_replies
from finetuneflow.models.load import eval_mode
from finetuneflow.models.loss import mean_loss
from finetuneflow.state import runs as rf
from finetuneflow.text.questions import Question, sample
from finetuneflow.text.scores import token_f1
from finetuneflow.train import checkpoint as ckpt
from finetuneflow.train.config import RecallSettings

__all__ = ["RecallProbe", "guard_paragraphs", "replay_paragraphs", "replay_records"]

GUARD_EVERY = 4  # every 4th replay paragraph is held back for the guard, the rest may be trained on


def _paragraphs() -> list[str]:
    text = (resources.files("finetuneflow.train") / "data" / "replay.md").read_text(encoding="utf-8")
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip() and not p.startswith("#")]


def replay_paragraphs() -> list[str]:
    """The replay sample's paragraphs that training may see."""
    return [p for i, p in enumerate(_paragraphs()) if i % GUARD_EVERY != GUARD_EVERY - 1]


def guard_paragraphs() -> list[str]:
    """The replay sample's paragraphs the forgetting guard measures (never trained on)."""
    return [p for i, p in enumerate(_paragraphs()) if i % GUARD_EVERY == GUARD_EVERY - 1]


def replay_records(n_train: int, share: float) -> list[dict[str, Any]]:
    """Plain-text records of general prose, ``share`` of ``n_train`` (cycling through the sample)."""
    pool = replay_paragraphs()
    count = round(n_train * share)
    return [{"id": f"replay-{i}", "source": "replay", "text": pool[i % len(pool)]} for i in range(count)]


@dataclass
class RecallProbe:
    """Scores recall and forgetting for the loop, and decides the best step and when to stop."""

    questions: list[Question]
    guard_rows: list[Row]
    tokenizer: Any
    settings: RecallSettings
    every: int
    retell: Callable[[float], None] | None = None
    """Called with the seconds the base's probe took: the up-front ETA, redone with a measured probe."""

    @classmethod
    def build(
        cls, tokenizer: Any, train_records: list[dict[str, Any]], settings: RecallSettings, seed: int,
        total_steps: int, max_len: int,
    ) -> RecallProbe:  # fmt: skip
        """The probe for a run of ``total_steps``: questions from the training records, the guard's rows."""
        questions = sample(train_records, settings.questions, seed, "recall")
        guard: list[Row] = []
        if settings.max_forgetting > 0:
            guard, _ = encode_rows(tokenizer, [{"text": p} for p in guard_paragraphs()], max_len)
        every = settings.every or max(1, total_steps // 16)
        return cls(questions, guard, tokenizer, settings, every)

    def measure(self, loop: Any) -> tuple[float, float | None]:
        """(mean answer F1 on the probe, loss on the guard text or None) for the model as it is now."""
        amp = partial(hardware.autocast, loop.device.split(":")[0], loop.dtype)
        with eval_mode(loop.model) as model:
            with amp():
                answers = generate_replies(
                    model, self.tokenizer, [q.prompt for q in self.questions], self.settings.max_new_tokens
                )
            guard = mean_loss(model, self.guard_rows, loop.device, 4, amp) if self.guard_rows else None
        pairs = zip(answers, self.questions, strict=True)
        f1 = sum(max(token_f1(a, r) for r in q.references) for a, q in pairs)
        return f1 / max(1, len(self.questions)), guard

    def track(self, loop: Any, state: ckpt.LoopState, log: rf.MetricsLog | None) -> bool:
        """Probe now, update the best step (saving a checkpoint for it); True when the run should stop."""
        start = time.perf_counter()
        f1, guard = self.measure(loop)
        if state.step == 0 and self.retell is not None:
            self.retell(time.perf_counter() - start)
        if state.guard_base is None:
            state.guard_base = guard
        change = _change(state.guard_base, guard)
        state.last_recall = f1
        if log:
            log.write(step=state.step, recall_f1=round(f1, 4), general_change=change)
        loop.emit("recall", message=self._line(state.step, f1, change))  # a log line, not a bar
        limit = self.settings.max_forgetting
        if limit > 0 and change is not None and change > limit:
            state.stop_reason = f"forgetting guard: general-text perplexity up {change:.0%}"
            return state.step < loop.total  # at the last step the run is finished anyway
        if state.step == 0:  # the base: kept only when no trained probe stays within the guard
            return False
        if state.best_recall is None or f1 > state.best_recall + self.settings.min_delta:
            state.best_recall, state.best_step, state.bad_evals = f1, state.step, 0
        else:
            state.bad_evals += 1
        patience = self.settings.patience
        if patience > 0 and state.bad_evals >= patience and state.step < loop.total:
            state.stop_reason = f"recall F1 did not improve for {state.bad_evals} probes"
            return True
        return False

    def message(self, state: ckpt.LoopState) -> str:
        return (
            f"early stop at step {state.step} ({state.stop_reason}); keeping the best: recall F1 "
            f"{state.best_recall or 0:.3f} at step {state.best_step}"
        )

    @staticmethod
    def _line(step: int, f1: float, change: float | None) -> str:
        general = "" if change is None else f", general-text perplexity {change:+.1%}"
        return f"step {step}: recall F1 {f1:.3f}{general}"


def _change(base: float | None, now: float | None) -> float | None:
    """Relative change of perplexity between two mean losses (exp of the difference, minus 1)."""
    if base is None or now is None:
        return None
    return round(math.exp(min(now - base, 50)) - 1, 4)
