"""Loading models and tokenizers safely: safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved with a model or adapter folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)


def _quiet() -> None:
    # our own progress display replaces transformers' per-load bars; peft 0.21 calls an API
    # that transformers 5 marks deprecated on every wrap, which says nothing to a user
    import logging as std_logging
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    # bitsandbytes (the qlora extra) logs on import that an optional CPU kernel package is missing
    std_logging.getLogger("bitsandbytes").setLevel(std_logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def load_causal_lm(model_dir: Path, device: str = "cpu") -> Any:
    """A causal LM in fp32 (autocast supplies bf16 compute where supported)."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet()

    model: Any = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, use_safetensors=True, trust_remote_code=False
    )
    return model.to(device)


def load_with_adapter(base_dir: Path, adapter_dir: Path, device: str = "cpu") -> Any:
    """Base model with a trained LoRA adapter on top (``model.disable_adapter()`` gives the base back)."""
    from peft import PeftModel

    base = load_causal_lm(base_dir, device)
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).to(device)
