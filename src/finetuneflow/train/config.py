"""Settings of the training step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetuneflow.config import setting


@dataclass
class TrainConfig:
    """LoRA fine-tuning settings; defaults suit a 135M model on a laptop CPU."""

    base_model: str = setting(
        "smollm2-135m-instruct", "Model to fine-tune: default name, .gguf, folder or hub id."
    )
    max_len: int = setting(512, "Tokens per packed row; longer examples are truncated (and counted).")
    epochs: float = setting(3.0, "Passes over the training rows (fractions allowed).")
    max_steps: int = setting(0, "Stop after this many optimizer steps (0 = no limit; epochs decide).")
    batch_size: int = setting(4, "Packed rows per micro-batch.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    learning_rate: float = setting(2e-4, "Peak AdamW learning rate.")
    warmup_ratio: float = setting(0.06, "Fraction of steps spent warming up linearly before cosine decay.")
    weight_decay: float = setting(0.0, "AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0 = no clipping).")
    lora_r: int = setting(16, "LoRA rank.")
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = setting(
        0.0, "Dropout on the LoRA input (0 = off; on a CPU its random masks cost ~15% of step time)."
    )
    target_modules: str = setting("all-linear", "Modules to adapt: 'all-linear' or comma-separated names.")
    use_text: bool = setting(True, "Also train on the dataset's plain-text (document) examples.")
    eval_every: int = setting(0, "Eval loss every N steps (0 = about 5 times per run).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "Compute precision: auto = bf16 where the CPU/GPU supports it, else fp32."
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    threads: int = setting(0, "CPU threads for torch (0 = all available cores).")
    seed: int = setting(42, "Seed for row order, LoRA init and dropout: same seed, same run.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix."""
        out = []
        if not 32 <= self.max_len <= 131072:
            out.append(f"max_len: {self.max_len} is outside 32..131072")
        for name in ("batch_size", "grad_accum", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            out.append("epochs: must be > 0 unless max_steps is set")
        if self.max_steps < 0 or self.eval_every < 0 or self.threads < 0:
            out.append("max_steps, eval_every, threads: must be >= 0")
        if not 0 < self.learning_rate < 1:
            out.append(f"learning_rate: {self.learning_rate} is not in (0, 1); try 2e-4")
        if not 0 <= self.warmup_ratio < 1:
            out.append("warmup_ratio: must be in [0, 1)")
        if not 0 <= self.lora_dropout < 1:
            out.append("lora_dropout: must be in [0, 1)")
        return out
