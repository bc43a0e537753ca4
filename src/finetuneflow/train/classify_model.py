"""The model half of sequence classification: load the base as a classifier, add LoRA, batch, score.

Shared by training and :func:`finetuneflow.train.classify.predict`, so a saved run scores texts
with exactly the code that evaluated it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetuneflow.errors import TrainingError
from finetuneflow.models.chat import pad_id

if TYPE_CHECKING:
    from finetuneflow.train.classify import ClassifyConfig


@contextmanager
def quiet() -> Iterator[None]:
    # our progress events replace transformers' load bars and its "score.weight newly initialized"
    # report (a fresh head is the point here); peft 0.21 trips a transformers 5 deprecation on wrap
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        logging.set_verbosity(level)


def pad_id_of(tokenizer: Any) -> int:
    """The id batches are padded with: pad, else eos (SmolLM2 and the tiny test model: pad == eos)."""
    pad = pad_id(tokenizer)
    if pad is None:
        raise TrainingError("the tokenizer has neither a pad nor an eos token; batches cannot be padded")
    return int(pad)


def load_classifier(model_dir: Path, names: list[str], pad_id: int, device: str) -> Any:
    """The base as a sequence classifier in fp32 with ``len(names)`` classes and a new head.

    ``pad_token_id`` goes into the model config because a decoder classifies from the last token
    that is not padding; without it transformers refuses batches larger than one.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    with quiet():
        model: Any = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            pad_token_id=pad_id,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=False,
        )
    model.config.pad_token_id = pad_id
    return model.to(device)


HEAD_NAMES = ("score", "classifier")  # decoder models (Llama, Qwen, ...) and encoder models (BERT, ...)


def attach_lora(model: Any, cfg: ClassifyConfig) -> Any:
    """Fresh LoRA adapters plus a fully trained (and saved) classification head.

    Raises:
        TrainingError: the model has no head under a known name, so it would stay random.
    """
    from peft import get_peft_model

    from finetuneflow.train.model_setup import lora_config

    head = next((n for n in HEAD_NAMES if hasattr(model, n)), None)
    if head is None:
        raise TrainingError(f"{type(model).__name__} has no classification head named {HEAD_NAMES}")
    lora = lora_config(cfg.lora, "SEQ_CLS", modules_to_save=[head])
    with quiet():
        return get_peft_model(model, lora)


def encode(tokenizer: Any, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Token ids per text, cut to ``max_len`` (keeping the start); returns ids and how many were cut."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return [list(x[:max_len]) for x in ids], sum(len(x) > max_len for x in ids)


def collate(ids: list[list[int]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded [batch, longest] tensors. Right, not left: Llama-style models number positions
    from the row start, so left padding would shift them and change a text's logits with its batch."""
    import torch

    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def scores(
    model: Any, ids: list[list[int]], pad_id: int, device: str, amp: Callable[[], Any], batch_size: int
) -> Any:
    """Class probabilities [n_texts, n_classes] (fp32, on the CPU) in eval mode, no gradients."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            with amp():
                logits = model(**collate(ids[i : i + batch_size], pad_id, device)).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))
