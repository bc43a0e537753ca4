"""The model a classification run trains: the base as a classifier (:mod:`models.classifier`),
fresh LoRA adapters, and the classification head trained in full and saved with the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.errors import TrainingError
from finetuneflow.models.classifier import HEAD_NAMES, load_classifier, quiet
from finetuneflow.models.lora import lora_config


def build(model_dir: Path, names: list[str], pad_id: int, device: str, cfg: ClassifyConfig) -> Any:
    """The base as a ``len(names)``-class classifier with LoRA and a trainable head.

    Seed torch first: the new head and the LoRA A matrices draw from it.

    Raises:
        TrainingError: the model has no head under a known name, so it would stay random.
    """
    return attach_lora(load_classifier(model_dir, names, pad_id, device), cfg)


def attach_lora(model: Any, cfg: ClassifyConfig) -> Any:
    """Fresh LoRA adapters plus a fully trained (and saved) classification head.

    Raises:
        TrainingError: the model has no head under a known name, so it would stay random.
    """
    from peft import get_peft_model

    head = next((n for n in HEAD_NAMES if hasattr(model, n)), None)
    if head is None:
        raise TrainingError(f"{type(model).__name__} has no classification head named {HEAD_NAMES}")
    lora = lora_config(cfg.lora, "SEQ_CLS", modules_to_save=[head])
    with quiet():
        return get_peft_model(model, lora)
