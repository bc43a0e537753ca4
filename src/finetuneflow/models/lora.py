"""LoRA settings and PEFT's config for them: shared by every step that trains an adapter
(causal fine-tuning and sequence classification)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetuneflow.config import setting


@dataclass
class LoraSettings:
    """The adapter trained by ``method='lora'`` or ``'qlora'`` (and by classification)."""

    r: int = setting(16, "LoRA rank.")
    alpha: int = setting(32, "LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = setting(
        0.0,
        "Dropout on the LoRA input (0 = off; on a CPU its random masks cost ~15% of step time, and "
        "peft's own forward then keeps every layer's input again: ~1.9x the activation memory).",
    )
    target_modules: str = setting("all-linear", "Modules to adapt: 'all-linear' or comma-separated names.")
    rslora: bool = setting(False, "Rank-stabilised LoRA: scale by alpha / sqrt(r) (helps at high ranks).")
    dora: bool = setting(False, "DoRA: learn a magnitude per output as well (slower, sometimes better).")

    def problems(self) -> list[str]:
        out = [f"{n}: must be >= 1" for n in ("r", "alpha") if getattr(self, n) < 1]
        if not 0 <= self.dropout < 1:
            out.append("dropout: must be in [0, 1)")
        if not self.target_modules.strip():
            out.append("target_modules: empty; use 'all-linear' or names such as 'q_proj,v_proj'")
        return out


def lora_config(settings: LoraSettings, task_type: str, modules_to_save: list[str] | None = None) -> Any:
    """PEFT's LoraConfig for our settings ('all-linear' or comma-separated target names)."""
    from peft import LoraConfig

    targets: str | list[str] = settings.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in settings.target_modules.split(",") if t.strip()]
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        use_rslora=settings.rslora,
        use_dora=settings.dora,
        modules_to_save=modules_to_save,
        task_type=task_type,
    )
