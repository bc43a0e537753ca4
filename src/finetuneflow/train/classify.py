"""Sequence classification: LoRA on a labelled CSV (text, label), scored by accuracy and F1.

Reads top to bottom as read -> set up -> train -> evaluate -> save, like :mod:`train.step`. The base
is loaded as ``AutoModelForSequenceClassification``: a decoder model then classifies from its last
non-padding token through a fresh linear head (``score``), which is trained in full next to LoRA.
The run folder follows :mod:`train.run_files`, plus ``labels.json`` and ``eval_predictions.jsonl``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from finetuneflow import hardware, paths
from finetuneflow.config import from_dict, section, setting, to_dict
from finetuneflow.errors import ClassifyDataError, ConfigError, TrainingError
from finetuneflow.events import Emitter, EventSink
from finetuneflow.models.load import load_tokenizer
from finetuneflow.models.resolve import resolve_model
from finetuneflow.state import runs as rf
from finetuneflow.train.classify_data import (
    Example,
    LabelledFile,
    check_eval_labels,
    label_names,
    read_labelled_csv,
    stratified_split,
)
from finetuneflow.train.classify_metrics import classification_metrics, majority_baseline
from finetuneflow.train.classify_model import (
    attach_lora,
    collate,
    encode,
    load_classifier,
    pad_id_of,
    quiet,
    scores,
)
from finetuneflow.train.config import LoraSettings
from finetuneflow.train.step import lr_at

LABELS = "labels.json"
PREDICTIONS = "eval_predictions.jsonl"


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
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", "Compute precision: auto = bf16 where the CPU/GPU supports it, else fp32."
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps.")
    threads: int = setting(0, "CPU threads for torch (0 = all available cores).")
    seed: int = setting(42, "Seed for the split, example order, head and LoRA init: same seed, same run.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix."""
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
        return out


@dataclass
class ClassifyData:
    """The examples of both sides, checked, with the label names (id = index) and the files read."""

    train: list[Example]
    eval: list[Example]
    names: list[str]
    files: dict[str, LabelledFile]


def load_data(csv_path: Path, cfg: ClassifyConfig, eval_csv: Path | None = None) -> ClassifyData:
    """Read the CSV(s), map labels, and split stratified unless an eval CSV is given.

    Raises:
        ClassifyDataError: bad rows, fewer than 2 classes, a class with 1 example, unknown eval labels.
    """
    train_file = read_labelled_csv(csv_path, cfg.text_column, cfg.label_column)
    files = {"train_csv": train_file}
    names = label_names(train_file.examples)
    if eval_csv is not None:
        eval_file = read_labelled_csv(eval_csv, cfg.text_column, cfg.label_column)
        check_eval_labels(eval_file.examples, names, eval_csv)
        files["eval_csv"] = eval_file
        return ClassifyData(train_file.examples, eval_file.examples, names, files)
    if cfg.eval_fraction <= 0:
        raise ClassifyDataError(
            "eval_fraction is 0 and no eval CSV was given: nothing to measure accuracy on. "
            "Set eval_fraction (e.g. 0.2) or pass an eval CSV."
        )
    train, held = stratified_split(train_file.examples, cfg.eval_fraction, cfg.seed)
    return ClassifyData(train, held, names, files)


def plan_steps(n_examples: int, cfg: ClassifyConfig) -> int:
    """Optimizer steps for the configured epochs (or max_steps)."""
    per_epoch = max(1, math.ceil(n_examples / cfg.batch_size))
    steps = max(1, round(per_epoch * cfg.epochs)) if cfg.epochs > 0 else cfg.max_steps
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


def batch_order(n_examples: int, batch_size: int, total_steps: int, seed: int) -> list[list[int]]:
    """Example indices for every step, reshuffled (seeded) at each epoch boundary."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < total_steps * batch_size:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        order += epoch
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(total_steps)]


def train_classifier(
    csv_path: Path,
    run_dir: Path,
    cfg: ClassifyConfig,
    on_event: EventSink | None = None,
    eval_csv: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune ``cfg.base_model`` as a classifier of the CSV's labels; writes the run folder and
    returns the summary (accuracy, macro-F1, per-class scores, confusion matrix, majority baseline).

    Raises:
        ConfigError: ``cfg`` has invalid values.
        ClassifyDataError: the CSV cannot be used (the message names the rows).
        TrainingError: the run folder holds a finished run, or the loss became NaN/inf.
    """
    import torch

    if cfg.problems():
        raise ConfigError(cfg.problems(), "ClassifyConfig")
    emit = Emitter("classify", on_event)
    rf.check_not_finished(run_dir)
    emit("prepare", message="reading labelled examples")
    data = load_data(csv_path, cfg, eval_csv)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (rf.METRICS, PREDICTIONS):  # left by a crashed attempt; appending would mix runs
        (run_dir / stale).unlink(missing_ok=True)
    threads = hardware.setup_threads(cfg.threads)
    model_dir = resolve_model(cfg.base_model)
    tokenizer = load_tokenizer(model_dir)
    pad_id = pad_id_of(tokenizer)
    train_ids, train_cut = encode(tokenizer, [e.text for e in data.train], cfg.max_len)
    eval_ids, eval_cut = encode(tokenizer, [e.text for e in data.eval], cfg.max_len)
    device = hardware.pick_device(cfg.device)
    dtype = hardware.autocast_dtype(device, cfg.precision)
    _write_setup(run_dir, cfg, data, model_dir, device, dtype, threads, (train_cut, eval_cut))
    emit("load", message=f"loading {model_dir.name} as a {len(data.names)}-class classifier")
    torch.manual_seed(cfg.seed)  # the new head and the LoRA A matrices draw from it
    model = attach_lora(load_classifier(model_dir, data.names, pad_id, device), cfg)
    amp = partial(hardware.autocast, device, dtype)
    label_id = {n: i for i, n in enumerate(data.names)}
    train_labels = [label_id[e.label] for e in data.train]
    summary = _loop(model, train_ids, train_labels, pad_id, cfg, device, amp, run_dir, emit)

    emit("evaluate", message=f"scoring {len(data.eval)} eval examples")
    true = [label_id[e.label] for e in data.eval]
    probs = scores(model, eval_ids, pad_id, device, amp, cfg.batch_size)
    pred = probs.argmax(dim=-1).tolist()
    result = classification_metrics(true, pred, data.names)
    result["loss"] = round(float(-probs[range(len(true)), true].clamp_min(1e-12).log().mean()), 5)
    baseline = majority_baseline(train_labels, true)
    baseline["label"] = data.names[baseline["class_id"]]
    rf.MetricsLog(run_dir / rf.METRICS).write(
        step=summary["steps"],
        eval_loss=result["loss"],
        eval_accuracy=result["accuracy"],
        eval_macro_f1=result["macro_f1"],
    )
    _write_predictions(run_dir / PREDICTIONS, data, pred, probs)

    model.save_pretrained(str(run_dir / rf.ADAPTER))
    tokenizer.save_pretrained(str(run_dir / rf.ADAPTER))
    summary.update(
        run_dir=str(run_dir),
        labels=data.names,
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        eval=result,
        majority_baseline=baseline,
    )
    rf.write_json(run_dir / rf.SUMMARY, summary)  # last: its presence marks the run finished
    emit(
        "done",
        1,
        1,
        message=f"accuracy {result['accuracy']:.3f} (majority baseline {baseline['accuracy']:.3f}), "
        f"macro-F1 {result['macro_f1']:.3f}; adapter saved to {run_dir / rf.ADAPTER}",
        accuracy=result["accuracy"],
        macro_f1=result["macro_f1"],
    )
    return summary


def _write_setup(
    run_dir: Path,
    cfg: ClassifyConfig,
    data: ClassifyData,
    model_dir: Path,
    device: str,
    dtype: Any,
    threads: int,
    truncated: tuple[int, int],
) -> None:
    """config.json, manifest.json and labels.json: written before training, so a crash is diagnosable."""
    resolved = {
        "classify": to_dict(cfg),
        **{name: str(f.path) for name, f in data.files.items()},
        "model_dir": str(model_dir),
        "device": device,
        "autocast": str(dtype),
        "threads": threads,
    }
    rf.write_json(run_dir / rf.CONFIG, resolved)
    files = {
        name: {
            "path": str(f.path),
            "sha256": paths.sha256_file(f.path),
            "encoding": f.encoding,
            "delimiter": f.delimiter,
            "examples": len(f.examples),
            "blank_rows_skipped": f.skipped_blank,
        }
        for name, f in data.files.items()
    }
    split = {
        side: {"examples": len(rows), "truncated": cut, "per_class": _counts(rows, data.names)}
        for side, rows, cut in (("train", data.train, truncated[0]), ("eval", data.eval, truncated[1]))
    }
    manifest = {
        "task": "sequence-classification",
        "files": files,
        "split": "eval CSV" if "eval_csv" in data.files else f"stratified, {cfg.eval_fraction} per class",
        "data": split,
        "base_model": cfg.base_model,
        "versions": rf.library_versions(),
    }
    rf.write_json(run_dir / rf.MANIFEST, manifest)
    labels = {
        "labels": data.names,
        "id2label": {str(i): n for i, n in enumerate(data.names)},
        "label2id": {n: i for i, n in enumerate(data.names)},
    }
    rf.write_json(run_dir / LABELS, labels)


def _counts(rows: list[Example], names: list[str]) -> dict[str, int]:
    return {n: sum(1 for e in rows if e.label == n) for n in names}


def _loop(
    model: Any,
    ids: list[list[int]],
    labels: list[int],
    pad_id: int,
    cfg: ClassifyConfig,
    device: str,
    amp: Callable[[], Any],
    run_dir: Path,
    emit: Emitter,
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    total = plan_steps(len(ids), cfg)
    warmup = max(1, int(total * cfg.warmup_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    log = rf.MetricsLog(run_dir / rf.METRICS)
    start, loss_value = time.time(), float("nan")
    model.train()
    for step, batch in enumerate(batch_order(len(ids), cfg.batch_size, total, cfg.seed)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, warmup, cfg.learning_rate)
        target = torch.tensor([labels[i] for i in batch], device=device)
        with amp():
            logits = model(**collate([ids[i] for i in batch], pad_id, device)).logits  # [batch, classes]
        loss = F.cross_entropy(logits.float(), target)  # fp32: bf16 log-softmax loses the small margins
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at step {step + 1}; lower learning_rate "
                f"(now {cfg.learning_rate}) or use precision='fp32'"
            )
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.time() - start
        log.write(
            step=step + 1,
            loss=round(loss_value, 5),
            lr=opt.param_groups[0]["lr"],
            grad_norm=round(float(norm), 4),
            examples_per_s=round((step + 1) * cfg.batch_size / max(elapsed, 1e-9), 1),
        )
        emit("step", step + 1, total, loss=loss_value, elapsed_s=elapsed)
    return {
        "status": "finished",
        "task": "sequence-classification",
        "steps": total,
        "final_loss": loss_value,
        "train_seconds": round(time.time() - start, 1),
    }


def _write_predictions(path: Path, data: ClassifyData, pred: list[int], probs: Any) -> None:
    """One line per eval example: its row, true and predicted label and the predicted probability,
    so errors can be read next to the source file."""
    with path.open("w", encoding="utf-8") as fh:
        for e, p, row in zip(data.eval, pred, probs.tolist(), strict=True):
            line = {"row": e.row, "label": e.label, "predicted": data.names[p], "prob": round(row[p], 6)}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def predict(
    run_dir: Path, texts: list[str], device: str = "auto", batch_size: int | None = None
) -> list[tuple[str, float]]:
    """(label, probability) per text from a finished run: base model + the saved adapter and head.

    Batches default to the run's batch size, so a text batched as in evaluation gets the very
    numbers of ``eval_predictions.jsonl`` (other batchings differ only in float rounding).

    Raises:
        FileNotFoundError: ``run_dir`` holds no finished classification run.
    """
    from peft import PeftModel

    if not (run_dir / rf.SUMMARY).is_file() or not (run_dir / LABELS).is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished classification run (no summary/labels)")
    if not texts:
        return []
    resolved = rf.read_json(run_dir / rf.CONFIG)
    cfg = from_dict(ClassifyConfig, resolved["classify"])
    names: list[str] = rf.read_json(run_dir / LABELS)["labels"]
    model_dir = Path(resolved["model_dir"])
    if not (model_dir / "config.json").is_file():  # moved or cleaned cache: resolve the name again
        model_dir = resolve_model(cfg.base_model)
    device = hardware.pick_device(device)
    tokenizer = load_tokenizer(run_dir / rf.ADAPTER)
    pad_id = pad_id_of(tokenizer)
    base = load_classifier(model_dir, names, pad_id, device)
    with quiet():
        model = PeftModel.from_pretrained(base, str(run_dir / rf.ADAPTER), is_trainable=False).to(device)
    amp = partial(hardware.autocast, device, hardware.autocast_dtype(device, cfg.precision))
    ids, _ = encode(tokenizer, list(texts), cfg.max_len)
    probs = scores(model, ids, pad_id, device, amp, batch_size or cfg.batch_size)
    best = probs.argmax(dim=-1).tolist()
    return [(names[b], float(row[b])) for b, row in zip(best, probs.tolist(), strict=True)]
