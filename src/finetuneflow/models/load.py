"""Loading models and tokenizers safely: safetensors only, no remote code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode for the block (no dropout: generation, scoring), then back in the mode
    it was in, also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved with a model or adapter folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)


def _quiet() -> None:
    # our own progress display replaces transformers' per-load bars; peft 0.21 calls an API
    # that transformers 5 marks deprecated on every wrap, which says nothing to a user
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def load_causal_lm(
    model_dir: Path, device: str = "cpu", dtype: Any = None, attention: str | None = None
) -> Any:
    """A causal LM in fp32 (autocast supplies bf16 compute where supported), or in ``dtype``;
    ``attention`` picks transformers' attention implementation (its default when None)."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet()

    model: Any = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=dtype or torch.float32,
        use_safetensors=True,
        trust_remote_code=False,
        **({"attn_implementation": attention} if attention else {}),
    )
    return model.to(device)


def load_with_adapter(base_dir: Path, adapter_dir: Path, device: str = "cpu") -> Any:
    """Base model with a trained LoRA adapter on top (``model.disable_adapter()`` gives the base back)."""
    from peft import PeftModel

    base = load_causal_lm(base_dir, device)
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).to(device)


@dataclass
class Tuned:
    """A run's trained model: base + LoRA adapter, or fully fine-tuned weights.

    ``base()`` yields the untrained model for side-by-side comparisons: the adapter switched off
    (same weights in memory), or, after full fine-tuning, the base loaded once beside it.
    """

    model: Any
    tokenizer: Any
    base_dir: Path
    device: str
    full: bool
    _base: Any = None

    @contextmanager
    def base(self) -> Iterator[Any]:
        if not self.full:
            with self.model.disable_adapter():
                yield self.model
            return
        if self._base is None:
            self._base = load_causal_lm(self.base_dir, self.device).eval()
        yield self._base


def load_tuned(run_dir: Path, device: str = "cpu") -> Tuned:
    """The trained model of a finished run folder (``adapter/`` or, for full fine-tuning, ``model/``).

    Raises:
        FileNotFoundError: the run has no trained weights yet.
    """
    import json

    from finetuneflow.state import runs as rf

    base_dir = Path(json.loads((run_dir / rf.CONFIG).read_text())["model_dir"])
    if (run_dir / rf.ADAPTER / "adapter_config.json").exists():
        model = load_with_adapter(base_dir, run_dir / rf.ADAPTER, device).eval()
        return Tuned(model, load_tokenizer(run_dir / rf.ADAPTER), base_dir, device, full=False)
    if (run_dir / rf.FULL_MODEL / "config.json").exists():
        model = load_causal_lm(run_dir / rf.FULL_MODEL, device).eval()
        return Tuned(model, load_tokenizer(run_dir / rf.FULL_MODEL), base_dir, device, full=True)
    raise FileNotFoundError(f"{run_dir} has no trained adapter or model; run `ftf train` first")
