"""Settings of the classification step: the run, its LoRA adapter and its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetuneflow.config import section, setting
from finetuneflow.models.lora import LoraSettings


@dataclass
class ClassifyCheckpoints:
    """When a classification run saves itself, so ``--resume`` can continue it, and what it keeps."""

    every: int = setting(
        50, "Save a resumable checkpoint every N optimizer steps, and after the last (0 = never)."
    )
    keep_last: int = setting(
        2, "Checkpoints kept (older ones are deleted); the newest is what --resume continues."
    )

    def problems(self) -> list[str]:
        out = ["every: must be >= 0 (0 = no checkpoints)"] if self.every < 0 else []
        if self.keep_last < 1:
            out.append("keep_last: must be >= 1 (the newest checkpoint is what --resume continues)")
        return out


@dataclass
class ClassifyConfig:
    """Settings for LoRA sequence classification; defaults suit a 135M model on a laptop CPU."""

    base_model: str = setting(
        "smollm2-135m-instruct", "Model to fine-tune: default name, .gguf, folder or hub id."
    )
    text_column: str = setting("text", "CSV header of the column holding the text to classify.")
    label_column: str = setting("label", "CSV header of the column holding the class label.")
    eval_fraction: float = setting(
        0.2, "Share of each class held out for evaluation (ignored when an eval CSV is given)."
    )
    max_len: int = setting(256, "Tokens per text; longer texts keep their start (and are counted).")
    epochs: float = setting(3.0, "Passes over the training examples (fractions allowed).")
    max_steps: int = setting(0, "Stop after this many optimizer steps (0 = no limit; epochs decide).")
    batch_size: int = setting(8, "Texts per optimizer step.")
    learning_rate: float = setting(2e-4, "Peak AdamW learning rate (LoRA weights and the new head).")
    warmup_ratio: float = setting(0.06, "Fraction of steps spent warming up linearly before cosine decay.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0 = no clipping).")
    lora: LoraSettings = section(
        LoraSettings, "The LoRA adapter; the classification head is trained in full."
    )
    checkpoints: ClassifyCheckpoints = section(ClassifyCheckpoints, "Checkpoints for --resume.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "Compute precision: auto = bf16 where the CPU/GPU supports it, else fp32."
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    threads: int = setting(0, "CPU threads for torch (0 = all available cores).")
    seed: int = setting(42, "Seed for the split, example order, head and LoRA init: same seed, same run.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix (sections prefixed ``lora.`` / ``checkpoints.``)."""
        out = []
        if not self.text_column.strip() or not self.label_column.strip():
            out.append("text_column, label_column: must name a CSV column")
        elif self.text_column == self.label_column:
            out.append(f"label_column: must differ from text_column ({self.text_column!r})")
        if not 0 <= self.eval_fraction <= 0.9:
            out.append(f"eval_fraction: {self.eval_fraction} is outside 0..0.9; try 0.2")
        if not 8 <= self.max_len <= 131072:
            out.append(f"max_len: {self.max_len} is outside 8..131072")
        if self.batch_size < 1:
            out.append("batch_size: must be >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            out.append("epochs: must be > 0 unless max_steps is set")
        if self.max_steps < 0 or self.threads < 0:
            out.append("max_steps, threads: must be >= 0")
        if not 0 < self.learning_rate < 1:
            out.append(f"learning_rate: {self.learning_rate} is not in (0, 1); try 2e-4")
        if not 0 <= self.warmup_ratio < 1:
            out.append("warmup_ratio: must be in [0, 1)")
        if self.max_grad_norm < 0:
            out.append("max_grad_norm: must be >= 0 (0 = no clipping)")
        out += [f"lora.{p}" for p in self.lora.problems()]
        out += [f"checkpoints.{p}" for p in self.checkpoints.problems()]
        return out
