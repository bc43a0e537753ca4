"""Checkpoints of the causal training loop: its :class:`LoopState` in the shared, atomic,
pickle-free format of :mod:`finetuneflow.state.checkpoints`, with FSDP's sharded tensors gathered
whole on save (:func:`~finetuneflow.train.fsdp.full`) and cut back into shards on load
(:func:`~finetuneflow.train.fsdp.like`), so any process count can resume any checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow.state import checkpoints as fmt
from finetuneflow.state.checkpoints import (
    CHECKPOINTS,
    OPTIMIZER,
    STATE,
    WEIGHTS,
    checkpoint_dirs,
    latest,
    load_weights,
    prune,
)
from finetuneflow.train.fsdp import full, like

__all__ = [
    "CHECKPOINTS",
    "OPTIMIZER",
    "STATE",
    "WEIGHTS",
    "LoopState",
    "checkpoint_dirs",
    "latest",
    "load",
    "load_weights",
    "prune",
    "save",
]


@dataclass
class LoopState:
    """Where the loop is; everything here is saved with a checkpoint and restored on resume."""

    step: int = 0  # optimizer steps done
    micro_size: int = 0  # rows per micro-batch now (halved on out-of-memory)
    seen_tokens: int = 0  # real (non-padding) tokens trained on
    train_seconds: float = 0.0  # time spent in steps, over every session of the run
    best_eval: float | None = None
    best_step: int = 0
    bad_evals: int = 0  # evals since the best one (early stopping)
    last_eval: float | None = None
    last_loss: float | None = None
    ooms: list[dict[str, Any]] = field(default_factory=list)
    # the knowledge goal's recall probe (train/recall.py)
    best_recall: float | None = None
    last_recall: float | None = None
    guard_base: float | None = None  # general-text loss before training (forgetting guard)
    stop_reason: str = ""


def save(
    run_dir: Path, model: Any, opt: Any, scaler: Any, state: LoopState, keep_last: int, write: bool = True
) -> Path:
    """Write a checkpoint for ``state.step`` atomically, then prune old ones (keeping the best step);
    returns its folder.

    Sharded (FSDP) weights and optimizer state are gathered into whole tensors first, which every
    rank must take part in; only the rank with ``write`` writes.
    """
    return fmt.save(
        run_dir, model, opt, scaler, asdict(state), step=state.step, keep_last=keep_last,
        keep_step=state.best_step, write=write, gather=full,
    )  # fmt: skip


def load(folder: Path, model: Any, opt: Any, scaler: Any) -> LoopState:
    """Restore weights, optimizer, scaler and RNG from ``folder``; returns the loop state.

    Raises:
        ValueError: the checkpoint's tensors do not match this model (another model or method).
    """
    return LoopState(**fmt.load(folder, model, opt, scaler, place=like))
