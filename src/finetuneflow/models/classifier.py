"""A base model as a sequence classifier: load it (new or trained), batch texts, score them.

Shared by the classification step (training, evaluation, ``predict``) and the export step (the
reference an exported adapter is checked against), so a saved run scores texts with exactly the
code that evaluated it. A decoder model classifies from its last non-padding token through a
linear head (``score``); LoRA and that head are what a run trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuneflow.errors import TrainingError
from finetuneflow.models.chat import pad_id
from finetuneflow.models.load import eval_mode, load_tokenizer
from finetuneflow.models.resolve import resolve_model
from finetuneflow.state import runs as rf

HEAD_NAMES = ("score", "classifier")  # decoder models (Llama, Qwen, ...) and encoder models (BERT, ...)


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


def load_trained(adapter_dir: Path, model_dir: Path, names: list[str], device: str) -> tuple[Any, Any, int]:
    """(model, tokenizer, pad id) of a trained classifier: the base with the adapter and head saved
    in ``adapter_dir`` (which holds the tokenizer too), in eval mode."""
    from peft import PeftModel

    tokenizer = load_tokenizer(adapter_dir)
    pad = pad_id_of(tokenizer)
    base = load_classifier(model_dir, names, pad, device)
    with quiet():
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).to(device)
    return model.eval(), tokenizer, pad


@dataclass
class Trained:
    """A finished classification run's model, loaded: what scoring texts with it needs."""

    model: Any
    tokenizer: Any
    pad_id: int
    names: list[str]  # class id -> label
    base_dir: Path
    settings: dict[str, Any]  # the run's classification settings, as config.json records them


def load_run(run_dir: Path, device: str = "cpu") -> Trained:
    """The trained classifier of a classification run folder (``adapter/``, ``labels.json``).

    The base is the folder the run trained on, or, if that cache was moved or cleaned, the model
    its name resolves to now.

    Raises:
        FileNotFoundError: the run has no config.json or labels.json.
    """
    resolved = rf.read_json(run_dir / rf.CONFIG)
    names: list[str] = rf.read_json(run_dir / rf.LABELS)["labels"]
    settings = resolved[rf.CLASSIFY]
    base_dir = Path(resolved["model_dir"])
    if not (base_dir / "config.json").is_file():
        base_dir = resolve_model(settings["base_model"])
    model, tokenizer, pad = load_trained(run_dir / rf.ADAPTER, base_dir, names, device)
    return Trained(model, tokenizer, pad, names, base_dir, settings)


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

    out = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(ids), batch_size):
            with amp():
                logits = model(**collate(ids[i : i + batch_size], pad_id, device)).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))
