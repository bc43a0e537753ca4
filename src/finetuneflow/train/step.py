"""The training step: build -> set up (or resume) -> train -> save.

LoRA, QLoRA or full fine-tuning on packed rows with our own loop (train/loop.py). Measured on a
2-core AVX-512 BF16 CPU (bench/train.py), this loop ran 3.47x the real tokens/s of TRL's
SFTTrainer defaults at 0.60x its peak memory.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow import allocator, hardware
from finetuneflow.config import to_dict
from finetuneflow.errors import TrainingError
from finetuneflow.events import Emitter, EventSink
from finetuneflow.models.chat import IGNORE, Row, encode_rows
from finetuneflow.models.load import load_tokenizer
from finetuneflow.models.resolve import resolve_model
from finetuneflow.models.schedule import lr_at
from finetuneflow.state import runs as rf
from finetuneflow.state.datasets import dataset_hashes, read_split
from finetuneflow.train import checkpoint as ckpt
from finetuneflow.train import distributed as dd
from finetuneflow.train import fsdp, machine, memory, peers, rehearsal, side_by_side
from finetuneflow.train import recipe as rcp
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.loop import Loop, make_optimizer, plain_loss, run
from finetuneflow.train.model_setup import Built, attach_lora, build_model, resolve_method, trainable_count
from finetuneflow.train.recall import RecallProbe, replay_records

__all__ = ["TrainingError", "attach_lora", "batches", "lr_at", "plan_steps", "prepare", "train"]


@dataclass
class Prepared:
    """Everything the loop needs, built before any weight is touched."""

    tokenizer: Any
    model_dir: Path
    train_rows: list[Row]
    eval_rows: list[Row]
    stats: dict[str, Any]
    train_records: list[dict[str, Any]]  # the dataset's own (no replay): the recall probe asks these
    has_document_text: bool  # the dataset came from documents: goal auto picks knowledge


def prepare(dataset_dir: Path, cfg: TrainConfig) -> Prepared:
    """Resolve the model, read and encode the dataset (with the knowledge goal's general-text
    replay mixed in). Raises TrainingError if nothing to train."""
    model_dir = resolve_model(cfg.base_model)
    tokenizer = load_tokenizer(model_dir)
    kinds = ("chat", "text") if cfg.use_text else ("chat",)
    train_records = read_split(dataset_dir, "train", kinds)
    if not train_records:
        raise TrainingError(f"no training examples in {dataset_dir}; run `ftf dataset build` first")
    has_text = bool(read_split(dataset_dir, "train", ("text",)))
    mixed = list(train_records)
    if rcp.pick_goal(cfg, has_text) == "knowledge" and cfg.recall.replay > 0:
        mixed += replay_records(len(train_records), cfg.recall.replay)
    train_rows, train_counts = encode_rows(tokenizer, mixed, cfg.max_len)
    train_counts["replay_examples"] = len(mixed) - len(train_records)
    eval_rows, eval_counts = encode_rows(tokenizer, read_split(dataset_dir, "eval", kinds), cfg.max_len)
    stats = {"train": train_counts, "eval": eval_counts}
    return Prepared(tokenizer, model_dir, train_rows, eval_rows, stats, train_records, has_text)


def plan_steps(n_rows: int, cfg: TrainConfig) -> int:
    """Optimizer steps for the configured epochs (or max_steps)."""
    per_epoch = max(1, math.ceil(n_rows / cfg.step_rows))
    steps = max(1, round(per_epoch * cfg.epochs)) if cfg.epochs > 0 else cfg.max_steps
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


def batches(rows: list[Row], cfg: TrainConfig, total_steps: int) -> list[list[list[Row]]]:
    """Micro-batches for every optimizer step: rows reshuffled (seeded) at each epoch boundary."""
    rng = random.Random(cfg.seed)
    order: list[Row] = []
    need, size = total_steps * cfg.step_rows, max(1, cfg.batch_size)
    while len(order) < need:
        epoch = list(rows)
        rng.shuffle(epoch)
        order += epoch
    micro = [order[i : i + size] for i in range(0, need, size)]
    return [micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


def train(
    dataset_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    on_event: EventSink | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``cfg.base_model`` on the dataset; writes the run folder and returns the summary.

    With ``resume`` the run continues from its newest checkpoint (weights, optimizer, RNG, step),
    under the settings it was started with; without one it starts over in the same folder.

    Raises:
        TrainingError: the run folder holds a finished run (or, resuming, a run of other settings
            or data), there is no data, the loss became NaN/inf, or memory ran out for good.
    """
    # registered from the start on a CPU: another training starting beside this one sees it while
    # it loads, before either keeps a core busy (train/peers.py)
    with peers.Trainings(register=hardware.pick_device(cfg.device) == "cpu") as trainings:
        return _train(dataset_dir, run_dir, cfg, on_event, resume, trainings)


def _train(
    dataset_dir: Path, run_dir: Path, cfg: TrainConfig, on_event: EventSink | None, resume: bool,
    trainings: peers.Trainings,
) -> dict[str, Any]:  # fmt: skip
    import torch

    emit = Emitter("train", on_event)
    _check_run_folder(run_dir, dataset_dir, cfg, resume)
    dist = dd.init(hardware.pick_device(cfg.device))
    device = dd.device_for(dist, hardware.pick_device(cfg.device))
    threads = hardware.setup_threads(cfg.threads or max(1, hardware.available_cores() // dist.world))
    torch.manual_seed(cfg.seed)
    emit("prepare", message="encoding and packing examples")
    prep = prepare(dataset_dir, cfg)
    dtype = hardware.autocast_dtype(device, cfg.precision)
    sharded = use_fsdp(cfg, dist)
    _check_fsdp(cfg, device, sharded)
    split = split_step(cfg, prep, device, threads, dist)  # before the model takes its share of memory
    # Sharded, the base is read into CPU memory; fully_shard moves one unit at a time to the GPU
    # and keeps this rank's shard of it, so a GPU never holds more than one whole decoder layer.
    built = build_model(prep.model_dir, cfg, device, dtype, load_on="cpu" if sharded else None)
    asked = cfg
    recipe = rcp.resolve(cfg, _base_params(built), prep.has_document_text)
    step = recipe.cfg.step_rows  # the loop's cfg below; `asked` is what resume compares against
    cfg = replace(recipe.cfg, batch_size=split.rows, grad_accum=step // split.rows)
    side = split.side if side_by_side.safe(built.model) else 1
    for note in built.notes:
        emit("note", message=note)
    for line in recipe.notes:
        emit("recipe", message=line)
    if recipe.goal == "knowledge" and cfg.recall.rehearsal > 0 and not sharded:
        prep = _with_rehearsal(prep, built, cfg, run_dir, resume, dist, (device, dtype), emit)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _describe_run(run_dir, dataset_dir, asked, prep, built, {"device": device, "autocast": str(dtype),
                      "threads": threads, "allocator": allocator.in_use(), "world_size": dist.world,
                      "micro_batch": split.rows, "side_by_side": side,
                      "cpu_bf16_speedup": hardware.cpu_bf16_speedup() if device == "cpu" else None,
                      "recipe": recipe.to_dict(),
                      "parallel": "fsdp" if sharded else "ddp" if dist.active else "none"})  # fmt: skip
    loss_fn = (
        fsdp.shard(built.model, device, dist.world, cfg.loss_chunk)
        if sharded
        else plain_loss(built.model, cfg.loss_chunk)
    )
    opt, scaler, params = make_optimizer(built.model, cfg, dtype, device, sharded)
    plan = batches(prep.train_rows, cfg, plan_steps(len(prep.train_rows), cfg))
    probe = (
        RecallProbe.build(prep.tokenizer, prep.train_records, cfg.recall, cfg.seed, len(plan), cfg.max_len)
        if recipe.probing and not sharded
        else None
    )
    if probe is not None:
        eta = partial(_eta_line, prep, cfg, len(plan), probe, built, device)
        emit("eta", message=eta(None))
        probe.retell = lambda seconds: emit("eta", message=eta(seconds))
    loop = Loop(
        built.model, opt, scaler, params, plan, prep.eval_rows, cfg, device, dtype, run_dir, emit, dist,
        loss_fn, sharded, probe, side=side,
    )  # fmt: skip
    loop.peers = trainings
    if cfg.threads == 0 and device == "cpu" and dist.world == 1:  # "all cores": those left free
        loop.cores = hardware.CoreShare(threads)
        # the first step too: a step beside a busy core on all of them ran 2.7x slower, and two of
        # ours starting together each found the other still loading and took both cores
        loop.cores.settle(ours=trainings.others())
    state = _start_state(loop, resume)
    with allocator.keep_freed_pages() as pages:  # jemalloc: no page faults on reused activations
        loop.trim = pages.trim  # between steps: what it keeps stays near one step's working set
        status = run(loop, state)
    if sharded:  # the trained weights, whole, into rank 0's CPU memory (every rank helps gather)
        fsdp.gather_trained(loss_fn, keep=dist.main)
    summary = _summary(status, state, loop.total, built.method) | {"run_dir": str(run_dir)}
    summary["recipe"] = recipe.to_dict()
    if probe is not None:
        summary |= {"recall_f1": state.best_recall, "stop_reason": state.stop_reason}
    if dist.main:
        early = cfg.checkpoints.patience > 0 and state.best_step != 0
        if state.best_step != state.step and (probe is not None or early):
            ckpt.load_weights(run_dir / ckpt.CHECKPOINTS / f"step-{state.best_step:06d}", built.model)
        _save_result(built, prep, run_dir, summary)
        emit("done", 1, 1, message=f"saved to {run_dir}")
    dd.barrier(dist)
    dd.close(dist)
    return summary


def _with_rehearsal(
    prep: Prepared, built: Built, cfg: TrainConfig, run_dir: Path, resume: bool, dist: dd.Dist,
    where: tuple[str, Any], emit: Emitter,
) -> Prepared:  # fmt: skip
    """``prep`` with the base model's own answers to general prompts packed into its training rows
    (train/rehearsal.py): rank 0 generates them (or reads them back on resume), every rank gets them."""
    count = round(len(prep.train_records) * cfg.recall.rehearsal)
    if dist.main and not resume:  # starting over in this folder: an earlier start's answers go
        (run_dir / rehearsal.FILE).unlink(missing_ok=True)
    found = resume and (run_dir / rehearsal.FILE).is_file()
    emit("rehearsal", message=f"self-rehearsal: {'reading' if found else 'generating'} the base model's "
         f"answers to {min(count, rehearsal.MAX_ANSWERS)} general prompts")  # fmt: skip
    extra: list[dict[str, Any]] = []
    if dist.main:
        extra = rehearsal.records(built.model, prep.tokenizer, count, cfg.seed, *where, run_dir)
    extra = dd.broadcast(extra, dist)
    if not extra:
        return prep
    # packed into rows of their own: the dataset's rows stay exactly what they are without rehearsal
    rows, counts = encode_rows(prep.tokenizer, extra, cfg.max_len)
    stats = {**prep.stats, "train": {**prep.stats["train"], "rehearsal_examples": len(extra),
             "rehearsal_rows": counts["rows"]}}  # fmt: skip
    return replace(prep, train_rows=prep.train_rows + rows, stats=stats)


def split_step(cfg: TrainConfig, prep: Prepared, device: str, threads: int, dist: dd.Dist) -> memory.Split:
    """Rows per micro-batch and micro-batches side by side: ``cfg.batch_size`` one at a time, or
    for 0 (auto) what the memory estimate allows on this device and ``threads``. Rank 0 decides for
    all: sharded ranks must run the same micro-batches; ranks run theirs one at a time.

    Raises:
        TrainingError: on the other ranks, when rank 0 failed to decide (it raises its own error).
    """
    if cfg.batch_size:
        return memory.Split(cfg.batch_size)
    if not dist.main:  # one probe: another rank's would open a CUDA context on GPU 0 too
        decided = dd.broadcast(None, dist)
        if isinstance(decided, str):
            raise TrainingError(f"rank 0 could not size the micro-batches ({decided}); see its error")
        return memory.Split(*decided)
    try:
        split = _auto_split(cfg, prep, device, threads, dist)
    except BaseException as exc:  # the other ranks wait in the broadcast (Ctrl-C too): release them
        dd.broadcast(f"{type(exc).__name__}: {exc}", dist)
        raise
    return memory.Split(*dd.broadcast((split.rows, split.side), dist))


def _auto_split(cfg: TrainConfig, prep: Prepared, device: str, threads: int, dist: dd.Dist) -> memory.Split:
    hw = replace(machine.probe(), cpu_cores=1 if dist.active else threads)
    if not device.startswith("cuda"):  # e.g. device cpu on a CUDA machine: RAM is the limit
        hw = replace(hw, device=device.split(":")[0])
    labels = [x != IGNORE for r in prep.train_rows for x in r.labels[1:]]
    supervised = sum(labels) / max(1, len(labels))
    try:
        model_cfg = json.loads((prep.model_dir / "config.json").read_text())
        return memory.auto_split(model_cfg, cfg, hw, supervised)
    except (OSError, ValueError):  # sizes the estimate cannot read: one row, the least memory
        return memory.Split(1)


def _base_params(built: Built) -> int:
    """The base model's parameter count (an adapter's own weights left out)."""
    trainable, total = trainable_count(built.model)
    return total if built.method == "full" else total - trainable


def _eta_line(
    prep: Prepared,
    cfg: TrainConfig,
    steps: int,
    probe: RecallProbe,
    built: Built,
    device: str,
    probe_s: float | None,
) -> str:
    """What the knowledge goal will cost at most, said before it starts (priors), and again once the
    base's probe has been timed (``probe_s``); the loop's own ETA follows from measured steps."""
    params = _base_params(built)
    cores = cfg.threads or hardware.available_cores()
    speed = rcp.estimated_tokens_per_s(params, cores, hardware.cpu_prefers_bf16(), device.startswith("cuda"))
    rows_tokens = sum(r.real_tokens for r in prep.train_rows) / max(1, len(prep.train_rows))
    tokens = steps * cfg.step_rows * rows_tokens
    prior = rcp.probe_seconds(params, len(probe.questions), cfg.recall.max_new_tokens, speed)
    one = prior if probe_s is None else probe_s
    probes = steps // probe.every + 1
    seconds = rcp.eta_seconds(tokens, speed, probes, one)
    timed = f"~{one:.0f} s a probe" if probe_s is None else f"a probe took {one:.0f} s here"
    return (
        f"knowledge goal: at most {steps} steps (~{tokens:,.0f} tokens) and {probes} recall probes "
        f"({timed}); up to ~{seconds / 60:.0f} min at an estimated {speed:.0f} tokens/s "
        "(the probe usually stops it sooner)"
    )


def use_fsdp(cfg: TrainConfig, dist: dd.Dist) -> bool:
    """Whether this run shards its model (only with several processes; auto follows accelerate's flag)."""
    if not dist.active or cfg.parallel == "ddp":
        return False
    if cfg.parallel == "auto" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("1", "true"):
        return False
    if not fsdp.available():
        raise TrainingError(
            "parallel='fsdp' needs a newer torch (FSDP2 with SUM-only reductions; 2.13 is tested); "
            "upgrade torch or use parallel='ddp'"
        )
    return True


def _check_fsdp(cfg: TrainConfig, device: str, sharded: bool) -> None:
    if sharded and resolve_method(cfg, device)[0] == "qlora":
        raise TrainingError(
            "QLoRA's 4-bit base cannot be sharded here; use parallel='ddp' (a 4-bit base usually fits "
            "one GPU) or method='lora' with parallel='fsdp'"
        )


def _check_run_folder(run_dir: Path, dataset_dir: Path, cfg: TrainConfig, resume: bool) -> None:
    rf.check_not_finished(run_dir)
    if not resume or not (run_dir / rf.CONFIG).exists():
        return
    started, now = rf.read_json(run_dir / rf.CONFIG)["train"], to_dict(cfg)
    if started != now:
        changed = sorted(k for k in {**started, **now} if started.get(k) != now.get(k))
        raise TrainingError(f"cannot resume {run_dir} with other settings (changed: {', '.join(changed)})")
    if rf.read_json(run_dir / rf.MANIFEST)["dataset_files"] != dataset_hashes(dataset_dir):
        raise TrainingError(f"the dataset changed since {run_dir} started; start a new run instead")


def _start_state(loop: Loop, resume: bool) -> ckpt.LoopState:
    """A fresh loop state, or the newest checkpoint's (metrics logged after it are dropped)."""
    found = ckpt.latest(loop.run_dir) if resume else None
    if found is None:
        if loop.dist.main:
            (loop.run_dir / rf.METRICS).unlink(missing_ok=True)
        return ckpt.LoopState(micro_size=loop.cfg.batch_size)
    state = ckpt.load(found, loop.model, loop.opt, loop.scaler)
    if loop.dist.main:
        rf.truncate_metrics(loop.run_dir, state.step)
    loop.emit("resume", message=f"resuming from step {state.step} of {loop.total} ({found.name})")
    return state


def _describe_run(
    run_dir: Path, dataset_dir: Path, cfg: TrainConfig, prep: Prepared, built: Built, where: dict[str, Any]
) -> None:
    trainable, total = trainable_count(built.model)
    resolved: dict[str, Any] = {"train": to_dict(cfg), "method": built.method, "notes": built.notes}
    resolved["attention"] = built.attention
    resolved |= {"dataset": str(dataset_dir), "model_dir": str(prep.model_dir), **where}
    resolved |= {"trainable_params": trainable, "total_params": total}
    rf.write_json(run_dir / rf.CONFIG, resolved)
    rf.write_json(
        run_dir / rf.MANIFEST,
        {
            "dataset_files": dataset_hashes(dataset_dir),
            "data": prep.stats,
            "base_model": cfg.base_model,
            "versions": rf.library_versions(),
        },
    )


def _summary(status: str, state: ckpt.LoopState, total: int, method: str) -> dict[str, Any]:
    return {
        "status": status,
        "method": method,
        "steps": state.step,
        "planned_steps": total,
        "final_loss": state.last_loss,
        "eval_loss": state.best_eval if status == "early_stopped" else state.last_eval,
        "best_eval_loss": state.best_eval,
        "best_step": state.best_step,
        "train_seconds": round(state.train_seconds, 1),
        "tokens_per_s": round(state.seen_tokens / max(state.train_seconds, 1e-9), 1),
        "real_tokens": state.seen_tokens,
        "oom_backoffs": state.ooms,
    }


def _save_result(built: Built, prep: Prepared, run_dir: Path, summary: dict[str, Any]) -> None:
    """The adapter (for full fine-tuning, the whole model) with its tokenizer, then the summary."""
    target = run_dir / (rf.FULL_MODEL if built.method == "full" else rf.ADAPTER)
    built.model.save_pretrained(str(target), safe_serialization=True)
    prep.tokenizer.save_pretrained(str(target))
    summary["data"] = prep.stats
    rf.write_json(run_dir / rf.SUMMARY, summary)
