"""The classification step: read -> set up (or resume) -> train -> evaluate -> save.

LoRA on a labelled CSV (text, label), scored by accuracy and F1. The base is loaded as
``AutoModelForSequenceClassification``: a decoder model then classifies from its last non-padding
token through a fresh linear head (``score``), which is trained in full next to LoRA. The run
folder follows :mod:`finetuneflow.state.runs`, plus ``labels.json`` and ``eval_predictions.jsonl``.

Every step is planned up front from the seed (:func:`batch_order`), so the loop's position is the
number of optimizer steps done; checkpoints (:mod:`finetuneflow.state.checkpoints`, the format the
causal step uses) store it with the trained tensors, AdamW's state and the RNG, and ``resume``
replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow import hardware, paths
from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.classify.data import ClassifyData, load_data
from finetuneflow.classify.metrics import classification_metrics, majority_baseline
from finetuneflow.classify.model import build
from finetuneflow.config import to_dict
from finetuneflow.errors import ConfigError, TrainingError
from finetuneflow.events import Emitter, EventSink
from finetuneflow.models.classifier import collate, encode, pad_id_of, scores
from finetuneflow.models.load import load_tokenizer
from finetuneflow.models.resolve import resolve_model
from finetuneflow.models.schedule import lr_at
from finetuneflow.state import checkpoints as ckpt
from finetuneflow.state import runs as rf


@dataclass
class LoopState:
    """Where the loop is; saved with every checkpoint and restored on resume."""

    step: int = 0  # optimizer steps done
    train_seconds: float = 0.0  # time spent in steps, over every session of the run
    last_loss: float | None = None


@dataclass
class Setup:
    """Everything the loop and the evaluation need, built before any weight is trained."""

    data: ClassifyData
    model_dir: Path
    tokenizer: Any
    pad_id: int
    train_ids: list[list[int]]
    train_labels: list[int]
    eval_ids: list[list[int]]
    eval_labels: list[int]
    device: str
    amp: Callable[[], Any]


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


def train(
    csv_path: Path,
    run_dir: Path,
    cfg: ClassifyConfig,
    on_event: EventSink | None = None,
    eval_csv: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``cfg.base_model`` as a classifier of the CSV's labels; writes the run folder and
    returns the summary (accuracy, macro-F1, per-class scores, confusion matrix, majority baseline).

    With ``resume`` the run continues from its newest checkpoint (weights, optimizer, RNG, step),
    which needs the settings and files it was started with; without one it starts over.

    Raises:
        ConfigError: ``cfg`` has invalid values.
        ClassifyDataError: the CSV cannot be used (the message names the rows).
        TrainingError: the run folder holds a finished run (or, resuming, a run of other settings
            or files), or the loss became NaN/inf.
    """
    import torch

    if cfg.problems():
        raise ConfigError(cfg.problems(), "ClassifyConfig")
    emit = Emitter("classify", on_event)
    _check_run_folder(run_dir, cfg, resume)
    emit("prepare", message="reading labelled examples")
    data = load_data(csv_path, cfg, eval_csv)
    if resume:
        _check_same_files(run_dir, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup = _set_up(run_dir, cfg, data, emit)
    torch.manual_seed(cfg.seed)  # the new head and the LoRA A matrices draw from it
    model = build(setup.model_dir, data.names, setup.pad_id, setup.device, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    state = _start_state(run_dir, model, opt, resume, emit)
    _loop(model, opt, params, setup, cfg, run_dir, emit, state)
    return _finish(model, setup, cfg, run_dir, emit, state)


def _check_run_folder(run_dir: Path, cfg: ClassifyConfig, resume: bool) -> None:
    rf.check_not_finished(run_dir)
    if not resume or not (run_dir / rf.CONFIG).exists():
        return
    started, now = rf.read_json(run_dir / rf.CONFIG).get(rf.CLASSIFY, {}), to_dict(cfg)
    if started != now:
        changed = sorted(k for k in {**started, **now} if started.get(k) != now.get(k))
        raise TrainingError(f"cannot resume {run_dir} with other settings (changed: {', '.join(changed)})")


def _check_same_files(run_dir: Path, data: ClassifyData) -> None:
    if not (run_dir / rf.MANIFEST).exists():
        return
    recorded = {k: v["sha256"] for k, v in rf.read_json(run_dir / rf.MANIFEST)["files"].items()}
    now = {k: paths.sha256_file(f.path) for k, f in data.files.items()}
    if recorded != now:
        changed = sorted(k for k in {**recorded, **now} if recorded.get(k) != now.get(k))
        raise TrainingError(
            f"the labelled file(s) changed since {run_dir} started ({', '.join(changed)}); "
            "start a new run instead"
        )


def _set_up(run_dir: Path, cfg: ClassifyConfig, data: ClassifyData, emit: Emitter) -> Setup:
    """Tokenize both sides, pick device and precision, and describe the run folder."""
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
    label_id = {n: i for i, n in enumerate(data.names)}
    return Setup(
        data, model_dir, tokenizer, pad_id, train_ids, [label_id[e.label] for e in data.train], eval_ids,
        [label_id[e.label] for e in data.eval], device, partial(hardware.autocast, device, dtype),
    )  # fmt: skip


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
        rf.CLASSIFY: to_dict(cfg),
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
        side: {"examples": len(rows), "truncated": cut, "per_class": data.counts(rows)}
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
    rf.write_json(run_dir / rf.LABELS, labels)


def _start_state(run_dir: Path, model: Any, opt: Any, resume: bool, emit: Emitter) -> LoopState:
    """A fresh loop state (files of an earlier attempt removed), or the newest checkpoint's."""
    found = ckpt.latest(run_dir) if resume else None
    if found is None:
        for stale in (rf.METRICS, rf.PREDICTIONS):  # left by a crashed attempt; appending would mix runs
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / rf.CHECKPOINTS, ignore_errors=True)  # a later resume must not find them
        return LoopState()
    state = LoopState(**ckpt.load(found, model, opt, None))
    rf.truncate_metrics(run_dir, state.step)  # the steps after the checkpoint are replayed
    emit("resume", message=f"resuming from step {state.step} ({found.name})")
    return state


def _loop(
    model: Any,
    opt: Any,
    params: list[Any],
    setup: Setup,
    cfg: ClassifyConfig,
    run_dir: Path,
    emit: Emitter,
    state: LoopState,
) -> None:
    """Train from ``state`` to the last planned step, checkpointing every ``checkpoints.every``."""
    import torch
    import torch.nn.functional as F

    ids, labels = setup.train_ids, setup.train_labels
    plan = batch_order(len(ids), cfg.batch_size, plan_steps(len(ids), cfg), cfg.seed)
    total, warmup = len(plan), max(1, int(len(plan) * cfg.warmup_ratio))
    log = rf.MetricsLog(run_dir / rf.METRICS)
    session_start, session_steps = time.time(), 0
    model.train()
    while state.step < total:
        batch, started = plan[state.step], time.time()
        lr = lr_at(state.step, total, warmup, cfg.learning_rate)
        for g in opt.param_groups:
            g["lr"] = lr
        target = torch.tensor([labels[i] for i in batch], device=setup.device)
        inputs = collate([ids[i] for i in batch], setup.pad_id, setup.device)
        with setup.amp():
            logits = model(**inputs).logits  # [batch, classes]
        loss = F.cross_entropy(logits.float(), target)  # fp32: bf16 log-softmax loses the small margins
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at step {state.step + 1}; lower learning_rate "
                f"(now {cfg.learning_rate}) or use precision='fp32'"
            )
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        state.train_seconds += time.time() - started
        state.step, state.last_loss, session_steps = state.step + 1, loss_value, session_steps + 1
        log.write(
            step=state.step, loss=round(loss_value, 5), lr=lr, grad_norm=round(float(norm), 4),
            examples_per_s=round(session_steps * cfg.batch_size / max(time.time() - session_start, 1e-9), 1),
        )  # fmt: skip
        every = cfg.checkpoints.every
        if every > 0 and (state.step % every == 0 or state.step == total):
            ckpt.save(run_dir, model, opt, None, asdict(state), step=state.step,
                      keep_last=cfg.checkpoints.keep_last)  # fmt: skip
        emit("step", state.step, total, loss=loss_value, elapsed_s=state.train_seconds)


def _finish(
    model: Any, setup: Setup, cfg: ClassifyConfig, run_dir: Path, emit: Emitter, state: LoopState
) -> dict[str, Any]:
    """Score the eval side, write metrics, predictions, adapter and (last) the summary."""
    data = setup.data
    emit("evaluate", message=f"scoring {len(data.eval)} eval examples")
    true = setup.eval_labels
    probs = scores(model, setup.eval_ids, setup.pad_id, setup.device, setup.amp, cfg.batch_size)
    pred = probs.argmax(dim=-1).tolist()
    result = classification_metrics(true, pred, data.names)
    result["loss"] = round(float(-probs[range(len(true)), true].clamp_min(1e-12).log().mean()), 5)
    baseline = majority_baseline(setup.train_labels, true)
    baseline["label"] = data.names[baseline["class_id"]]
    rf.MetricsLog(run_dir / rf.METRICS).write(
        step=state.step,
        eval_loss=result["loss"],
        eval_accuracy=result["accuracy"],
        eval_macro_f1=result["macro_f1"],
    )
    _write_predictions(run_dir / rf.PREDICTIONS, data, pred, probs)
    model.save_pretrained(str(run_dir / rf.ADAPTER))
    setup.tokenizer.save_pretrained(str(run_dir / rf.ADAPTER))
    summary = {
        "status": "finished",
        "task": "sequence-classification",
        "steps": state.step,
        "final_loss": state.last_loss,
        "train_seconds": round(state.train_seconds, 1),
        "run_dir": str(run_dir),
        "labels": data.names,
        "train_examples": len(data.train),
        "eval_examples": len(data.eval),
        "eval": result,
        "majority_baseline": baseline,
    }
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


def _write_predictions(path: Path, data: ClassifyData, pred: list[int], probs: Any) -> None:
    """One line per eval example: its row and text, true and predicted label and the predicted
    probability, so errors can be read next to the source file (and exports checked against it)."""
    with path.open("w", encoding="utf-8") as fh:
        for e, p, row in zip(data.eval, pred, probs.tolist(), strict=True):
            line = {"row": e.row, "text": e.text, "label": e.label, "predicted": data.names[p],
                    "prob": round(row[p], 6)}  # fmt: skip
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
