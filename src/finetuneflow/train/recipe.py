"""Training goals: what a run is for decides how long it trains, how fast, and on what.

=========  ==========================================================================================
goal       what it does
=========  ==========================================================================================
style      the run exactly as configured (epochs, learning rate 2e-4 unless set): tone and format
knowledge  put the documents' facts in: up to :data:`KNOWLEDGE_EPOCHS` passes, stopped by the
           recall probe (answer F1 on a sample of training questions, :mod:`.recall`) and the
           forgetting guard; a learning rate sized to the model; general-text replay in the mix
auto       knowledge when the dataset has document text (it came from documents), else style
=========  ==========================================================================================

Only the answers are supervised in chat rows (:mod:`finetuneflow.models.chat`), whatever the goal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from finetuneflow.models.generate import DECODE_BATCH
from finetuneflow.train import rehearsal
from finetuneflow.train.config import TrainConfig

__all__ = ["KNOWLEDGE_EPOCHS", "Recipe", "eta_seconds", "knowledge_budgets", "learning_rate_for", "resolve"]

KNOWLEDGE_EPOCHS = 12.0
"""The knowledge goal's ceiling in passes over the data; the recall probe usually stops it sooner."""
STYLE_LR = 2e-4
# LoRA learning rates that work fall with model size. Anchored on the default model (SmolLM2-135M),
# where bench/knowledge.py measured recall F1 0.87 after 36 steps at 1e-3 against 0.29 after 32 at
# 3e-4 (README, "Goals"); scaled by (params / 135M)^-0.5 within [5e-5, 1e-3]: ~3.7e-4 at 1B,
# ~1.4e-4 at 7B (the scaling is a rule of thumb, not measured here).
KNOWLEDGE_LR_AT_135M = 1e-3
_ANCHOR_PARAMS = 135e6
# A rough CPU training speed before anything is measured: a LoRA step costs ~4 x params FLOP per
# token. Measured on SmolLM2-135M, one thread (bench/train.py, 2026-12-06): bf16 on AVX-512 BF16
# ~245 real tok/s (~132 GFLOP/s; AMX cores run faster), fp32 on an AVX2-only core ~107 (~58).
_BF16_FLOP_PER_CORE = 150e9
_FP32_FLOP_PER_CORE = 58e9


@dataclass
class Recipe:
    """A goal turned into settings: the config the loop runs with, and why it differs."""

    goal: str  # "knowledge" or "style"
    cfg: TrainConfig
    notes: list[str] = field(default_factory=list)

    @property
    def probing(self) -> bool:
        return self.goal == "knowledge"

    def to_dict(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "learning_rate": self.cfg.learning_rate,
            "epochs": self.cfg.epochs,
            "notes": self.notes,
        }


def pick_goal(cfg: TrainConfig, has_document_text: bool) -> str:
    """``cfg.goal`` itself, or for ``auto``: knowledge when the dataset has document text."""
    if cfg.goal != "auto":
        return cfg.goal
    return "knowledge" if has_document_text else "style"


def learning_rate_for(params: int, goal: str) -> float:
    """The peak learning rate a goal uses when none is set, sized to the model's parameter count."""
    if goal != "knowledge":
        return STYLE_LR
    scaled = KNOWLEDGE_LR_AT_135M * math.sqrt(_ANCHOR_PARAMS / max(params, 1))
    return float(f"{min(1e-3, max(5e-5, scaled)):.2g}")


def resolve(cfg: TrainConfig, params: int, has_document_text: bool) -> Recipe:
    """The settings the loop runs with for ``cfg``'s goal (``cfg`` itself is left as given, so a
    resumed run compares against what the user asked for)."""
    goal = pick_goal(cfg, has_document_text)
    notes = [f"goal {goal}" + (" (auto: the dataset has document text)" if cfg.goal == "auto" and
                               goal == "knowledge" else " (auto: no document text)" if cfg.goal == "auto"
                               else "")]  # fmt: skip
    lr = cfg.learning_rate or learning_rate_for(params, goal)
    if not cfg.learning_rate:
        notes.append(f"learning rate {lr:g} sized to the model ({params / 1e6:.0f}M parameters, goal {goal})")
    resolved = replace(cfg, learning_rate=lr, goal=goal)  # type: ignore[arg-type]
    if goal == "knowledge":
        # epochs left at the default: the knowledge ceiling (max_steps, when set, stays the ceiling);
        # epochs the user set are kept
        if cfg.epochs == TrainConfig.epochs:
            resolved = replace(resolved, epochs=KNOWLEDGE_EPOCHS)
        ceiling = f"{cfg.max_steps} steps" if cfg.max_steps else f"{resolved.epochs:g} epochs"
        notes.append(
            f"up to {ceiling}; the recall probe stops training when answers stop improving or general "
            f"text gets more than {cfg.recall.max_forgetting:.0%} less likely"
        )
        if cfg.recall.replay:
            notes.append(f"general-text replay: {cfg.recall.replay:.0%} of the training rows")
        if cfg.recall.rehearsal:
            notes.append(
                f"self-rehearsal: the base model's own answers to general prompts, "
                f"{cfg.recall.rehearsal:.0%} of the training examples"
            )
    return Recipe(goal, resolved, notes)


def estimated_tokens_per_s(params: int, cores: int, bf16: bool, gpu: bool = False) -> float:
    """A prior for training speed before a micro-benchmark has measured it (CPU only; GPUs are
    assumed 50x one bf16 core, a floor rather than a promise; ``bf16`` is the CPU's and says
    nothing about a GPU)."""
    per_core = _BF16_FLOP_PER_CORE if bf16 or gpu else _FP32_FLOP_PER_CORE
    flops = per_core * max(1, cores) * (50 if gpu else 1)
    return flops / (4 * max(params, 1))


DECODE_STEP_TOKENS = 27  # training tokens one decoding step of a DECODE_BATCH costs (probe_seconds)


def probe_seconds(params: int, questions: int, max_new_tokens: int, tokens_per_s: float) -> float:
    """One recall probe: batched greedy decoding, ``DECODE_BATCH`` answers per batch; a decoding
    step of 8 answers costs about as much as training ~16 tokens: little arithmetic, but every
    weight read and the per-step overhead of generate() (SmolLM2-135M, bf16, AVX-512 BF16 CPU: 84
    ms a step against 168 training tokens/s on one thread, 66 ms against ~290 on two), and a step
    of 24 about 1.7x that (2026-12-06, two threads: 98 against 57 ms in bf16, 149 against 90 in
    fp32). The run retells its ETA with the base's probe timed (train/recall.py ``retell``)."""
    batches = math.ceil(questions / DECODE_BATCH)
    return batches * max_new_tokens * DECODE_STEP_TOKENS / max(tokens_per_s, 1e-9) * (1 + params / 2e9)


def eta_seconds(tokens: float, tokens_per_s: float, probes: int, one_probe_s: float) -> float:
    """Training time for ``tokens`` real tokens plus ``probes`` recall probes."""
    return tokens / max(tokens_per_s, 1e-9) + probes * one_probe_s


def knowledge_budgets(
    epoch_tokens: int, tokens_per_s: float, one_probe_s: float, probes_per_epoch: float, once_s: float = 0.0
) -> list[dict[str, Any]]:
    """What the knowledge goal costs here at its full ceiling and at smaller budgets, and what each
    smaller one gives up (from the recall curve bench/knowledge.py measured on the default model at
    1e-3, ~8 steps an epoch: F1 0.10 after 1.5 epochs, 0.35 after 3, 0.87 after 4.5, 1.0 after 6).
    ``once_s`` is paid once whatever the budget (generating self-rehearsal answers)."""
    rows = []
    for epochs, gives_up in (
        (KNOWLEDGE_EPOCHS, "nothing: the probe stops it when recall stops improving"),
        (6.0, "little: on the bench recall F1 reached 1.0 after 6 epochs"),
        (3.0, "most of the recall: F1 0.35 after 3 epochs on the bench, answers in shape but often wrong"),
        (1.0, "nearly all of it: one pass teaches the format, not the facts"),
    ):
        seconds = once_s + eta_seconds(epoch_tokens * epochs, tokens_per_s,
                                       math.ceil(probes_per_epoch * epochs), one_probe_s)  # fmt: skip
        rows.append({"epochs": epochs, "seconds": round(seconds), "gives_up": gives_up})
    return rows


def goal_plan(
    cfg: TrainConfig, params: int, has_document_text: bool, lengths: list[int], speed: dict[str, Any]
) -> dict[str, Any]:
    """What ``ftf plan`` says about the goal: which one, its learning rate, and for the knowledge
    goal how long it takes here at each budget and what a smaller one gives up.

    ``speed`` holds ``tokens_per_s`` (measured, or None) and ``cores``/``bf16``/``gpu`` for the prior.
    """
    recipe = resolve(cfg, params, has_document_text)
    out: dict[str, Any] = recipe.to_dict()
    if not recipe.probing:
        return out
    measured = speed.get("tokens_per_s")
    tok_s = measured or estimated_tokens_per_s(params, speed["cores"], speed["bf16"], speed.get("gpu", False))
    # replay and rehearsal add their share of examples, sized here like the dataset's own
    tokens = sum(min(n, cfg.max_len) for n in lengths) * (1 + cfg.recall.replay + cfg.recall.rehearsal)
    # rows pack to max_len: steps per epoch ~ tokens / (max_len x rows per step)
    steps_per_epoch = max(1.0, tokens / (cfg.max_len * cfg.step_rows))
    every = cfg.recall.every or max(1, int(steps_per_epoch * KNOWLEDGE_EPOCHS) // 16)
    one = probe_seconds(params, cfg.recall.questions, cfg.recall.max_new_tokens, tok_s)
    out["tokens_per_s"] = round(tok_s, 1)
    out["speed_source"] = "measured" if measured else "estimated"
    answers = min(round(len(lengths) * cfg.recall.rehearsal), rehearsal.MAX_ANSWERS)
    once = probe_seconds(params, answers, rehearsal.MAX_NEW_TOKENS, tok_s) if answers else 0.0
    out["budgets"] = knowledge_budgets(int(tokens), tok_s, one, steps_per_epoch / every, once)
    return out
