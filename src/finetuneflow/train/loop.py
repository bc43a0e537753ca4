"""The optimizer loop: steps, evals, checkpoints, early stopping, out-of-memory back-off.

Every step is planned up front from the seed (:func:`finetuneflow.train.step.batches`), so the
loop's whole position is "optimizer steps done" plus the micro-batch size; a checkpoint stores
both and a resumed run replays exactly the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from finetuneflow import hardware
from finetuneflow.errors import TrainingError, is_out_of_memory
from finetuneflow.events import Emitter
from finetuneflow.models.chat import IGNORE, Row
from finetuneflow.models.loss import rows_to_tensors, summed_loss
from finetuneflow.models.schedule import lr_at
from finetuneflow.state import runs as rf
from finetuneflow.train import checkpoint as ckpt
from finetuneflow.train import distributed as dd
from finetuneflow.train import fsdp
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.side_by_side import BusyChoice, SideBySide

# AdamW's fused kernel (one pass over each parameter for the whole update) on a CPU or CUDA device,
# unsharded; the same maths as the per-parameter loop within float rounding (tests/train/test_step.py
# trains both). A module switch so that the bench's A/B (bench/train.py --profile --ab fused_adamw)
# and that test can run the loop path.
FUSED_ADAMW = True


@dataclass
class Loop:
    """What the loop works with; built once per session of a run."""

    model: Any
    opt: Any
    scaler: Any  # a GradScaler for fp16, else None
    params: list[Any]
    plan: list[list[list[Row]]]  # optimizer step -> micro-batches -> rows
    eval_rows: list[Row]
    cfg: TrainConfig
    device: str
    dtype: Any
    run_dir: Path
    emit: Emitter
    dist: dd.Dist
    loss_fn: Callable[[dict[str, Any]], tuple[Any, int]]  # batch -> (summed loss, supervised tokens)
    sharded: bool = False  # FSDP: weights are shards, every forward is a collective
    # The knowledge goal's recall probe (train/recall.py: RecallProbe): when set, it decides the
    # best step and early stopping on answer F1 and the forgetting guard instead of eval loss.
    probe: Any = None
    # hardware.CoreShare when threads is 0 (all cores) on a CPU: torch's threads follow the load
    cores: Any = None
    side: int = 1  # micro-batches at once, one core each (train/side_by_side.py), up to torch's threads
    pool: SideBySide | None = None  # its threads, while run() runs
    busy: BusyChoice = field(default_factory=BusyChoice)  # side by side beside a busy core?
    peers: Any = None  # train/peers.Trainings on a CPU: whether the busy core is another of ours
    trim: Callable[[], bool] = lambda: False  # after each step: allocator.FreedPages.trim

    @property
    def total(self) -> int:
        return len(self.plan)

    def microbatches(self, rows: list[Row], size: int) -> list[tuple[list[Row], float]]:
        """This rank's share of ``rows`` in micro-batches of ``size``, as (rows, loss weight).

        Sharded, every rank runs the same number of them (padding ones weigh 0).
        """
        count = fsdp.microbatch_count(len(rows), self.dist.world, size) if self.sharded else 0
        return fsdp.even_microbatches(dd.my_rows(rows, self.dist), size, count, rows[0])


def plain_loss(model: Any, chunk: int) -> Callable[[dict[str, Any]], tuple[Any, int]]:
    """The loss of an unsharded model (one process, or each rank of plain data parallelism)."""
    return lambda batch: summed_loss(model, batch, chunk)


def make_optimizer(
    model: Any, cfg: TrainConfig, dtype: Any, device: str, sharded: bool = False
) -> tuple[Any, Any, list[Any]]:
    """AdamW over the trainable parameters and, for fp16, a loss scaler.

    Sharded, the scaler must agree across ranks on whether a step overflowed (each rank sees only
    its shard of the gradients), which FSDP's scaler does.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    fused = FUSED_ADAMW and not sharded and device.split(":")[0] in ("cpu", "cuda")
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)
    scaler: Any = None
    if dtype == torch.float16:  # fp16's narrow range underflows small gradients without scaling
        if sharded:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            scaler = ShardedGradScaler(device.split(":")[0])
        else:
            scaler = torch.amp.GradScaler(device.split(":")[0])
    return opt, scaler, params


def run(loop: Loop, state: ckpt.LoopState) -> str:
    """Train from ``state`` to the end (or an early stop); returns the status."""
    cfg, log = loop.cfg, rf.MetricsLog(loop.run_dir / rf.METRICS) if loop.dist.main else None
    warmup = max(1, int(loop.total * cfg.warmup_ratio))
    eval_every = loop.probe.every if loop.probe else cfg.eval_every or max(1, loop.total // 5)
    if loop.probe and state.step == 0:  # the base's recall and general loss: the baseline, step 0
        loop.probe.track(loop, state, log)
        _save(loop, state)
    loop.model.train()
    loop.pool = SideBySide(loop.side) if loop.side > 1 else None  # step.py: CPU, LoRA, one process
    try:
        return _steps(loop, state, log, warmup, eval_every)
    finally:
        if loop.pool:
            loop.pool.close()
            loop.pool = None


def _steps(loop: Loop, state: ckpt.LoopState, log: rf.MetricsLog | None, warmup: int, eval_every: int) -> str:
    cfg, session_start, session_steps = loop.cfg, time.time(), 0
    while state.step < loop.total:
        rows = [r for micro in loop.plan[state.step] for r in micro]
        threads = loop.cores.adapt() if loop.cores else None
        busy = loop.pool is not None and threads is not None and threads < loop.side  # a core taken
        # beside another training of ours, one at a time (both keeping side by side was slower for each)
        ours = loop.peers.others() if busy and loop.peers else 0
        side = loop.pool is not None and (not busy or (not ours and loop.busy.side()))
        lr = lr_at(state.step, loop.total, warmup, cfg.learning_rate)
        started = time.time()
        loss, norm = _optimizer_step(loop, state, rows, lr, log, side)
        loop.trim()  # timed with the step: a purge's cost is the step's
        seconds = time.time() - started
        state.train_seconds += seconds
        state.step, state.last_loss = state.step + 1, loss
        session_steps += 1
        real = sum(r.real_tokens for r in rows)
        state.seen_tokens += real
        if busy and not ours:
            loop.busy.record(side, seconds, real)
        eta = (time.time() - session_start) / session_steps * (loop.total - state.step)
        speed = state.seen_tokens / max(state.train_seconds, 1e-9)
        if log:
            log.write(
                step=state.step, loss=round(loss, 5), lr=lr, grad_norm=round(norm, 4), real_tokens=real,
                tokens_per_s=round(speed, 1), eta_s=round(eta, 1),
                **({"threads": threads} if threads else {}),
                **({"side_by_side": loop.side if side and loop.pool else 1} if loop.side > 1 else {}),
                **({"other_trainings": ours} if ours else {}),
            )  # fmt: skip
        stop = False
        evaluated = state.step % eval_every == 0 or state.step == loop.total
        if evaluated:
            stop = _eval_and_track(loop, state, log)
            if loop.probe:
                stop = loop.probe.track(loop, state, log)
        if _should_save(cfg, state, evaluated):
            _save(loop, state)
        loop.emit(
            "step", state.step, loop.total, loss=loss, eval_loss=state.last_eval, lr=lr, grad_norm=norm,
            tokens_per_s=speed, eta_s=eta, elapsed_s=state.train_seconds,
        )  # fmt: skip
        if stop:
            message = loop.probe.message(state) if loop.probe else _early_stop_message(state)
            loop.emit("early_stop", message=message)
            return "early_stopped"
    return "finished"


def _optimizer_step(
    loop: Loop, state: ckpt.LoopState, rows: list[Row], lr: float, log: rf.MetricsLog | None, side: bool
) -> tuple[float, float]:
    """Forward/backward over this rank's rows in micro-batches, then one optimizer step.

    On out-of-memory the step starts over with half the micro-batch (twice the accumulation):
    the effective batch, and so the maths, stay the same.
    """
    import torch

    for group in loop.opt.param_groups:
        group["lr"] = lr
    # Dividing by the *global* count makes micro-batches, accumulation and ranks add up exactly.
    n_sup = max(1, sum(sum(1 for x in r.labels[1:] if x != IGNORE) for r in rows))
    amp = partial(hardware.autocast, loop.device.split(":")[0], loop.dtype)
    for attempt in range(loop.cfg.checkpoints.oom_retries + 1):
        try:
            parts = loop.microbatches(rows, state.micro_size)
            if side and loop.pool and len(parts) > 1:  # a core each (torch's threads 1 each)
                local = loop.pool.accumulate(parts, loop.loss_fn, loop.params, 1 / n_sup, amp, loop.device)
                break
            one_by_one = partial(_one_at_a_time, loop, parts, n_sup, amp)
            # beside a busy core, on a thread that never ran torch's ops on every core (SideBySide.alone)
            local = loop.pool.alone(one_by_one) if loop.pool and not side else one_by_one()
            break
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            _back_off(loop, state, attempt, err, log)
    if not loop.sharded:  # FSDP reduce-scattered them already
        dd.sum_gradients(loop.params, loop.dist)
    step_loss = dd.sum_floats([local], loop.dist, loop.device)[0] / n_sup
    if not math.isfinite(step_loss):
        raise TrainingError(
            f"loss became {step_loss} at step {state.step + 1}; lower learning_rate "
            f"(now {loop.cfg.learning_rate}) or use precision='fp32'"
        )
    if loop.scaler:
        loop.scaler.unscale_(loop.opt)
    norm = fsdp.full(torch.nn.utils.clip_grad_norm_(loop.params, loop.cfg.max_grad_norm or float("inf")))
    if loop.scaler:
        loop.scaler.step(loop.opt)  # skips the step when fp16 gradients overflowed
        loop.scaler.update()
    else:
        loop.opt.step()
    loop.opt.zero_grad(set_to_none=True)
    return step_loss, float(norm)


def _one_at_a_time(
    loop: Loop, parts: list[tuple[list[Row], float]], n_sup: int, amp: Callable[[], Any]
) -> float:
    """Forward and backward of each micro-batch in turn, gradients accumulated into ``.grad``;
    returns the weighted loss sum."""
    local = 0.0
    for part, weight in parts:
        with amp():
            loss_sum, _ = loop.loss_fn(rows_to_tensors(part, loop.device))
        scaled = loss_sum * (weight / n_sup)
        (loop.scaler.scale(scaled) if loop.scaler else scaled).backward()
        local += weight * float(loss_sum.detach())
    return local


def _back_off(
    loop: Loop, state: ckpt.LoopState, attempt: int, err: BaseException, log: rf.MetricsLog | None
) -> None:
    """Free what the failed attempt held and halve the micro-batch, or give up with a plan."""
    import torch

    loop.opt.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if loop.sharded:  # the other ranks already wait in the next collective: no rank can retry alone
        raise TrainingError(
            f"out of memory at step {state.step + 1} with parallel='fsdp' "
            f"({str(err).splitlines()[0][:200]}); sharded runs cannot shrink the micro-batch on one "
            "rank, so the others stop too. Lower "
            f"batch_size (now {state.micro_size}) or max_len (now {loop.cfg.max_len}), turn on "
            "gradient_checkpointing, or use more GPUs. `ftf plan` estimates what fits."
        ) from err
    if loop.pool and attempt < loop.cfg.checkpoints.oom_retries:  # first: one micro-batch at a time
        loop.pool.close()
        loop.pool = None
        _said_oom(loop, state, log, "one micro-batch at a time", one_at_a_time=True)
        return
    if state.micro_size == 1 or attempt == loop.cfg.checkpoints.oom_retries:
        raise TrainingError(
            f"out of memory at step {state.step + 1} even with {state.micro_size} row(s) per "
            f"micro-batch ({str(err).splitlines()[0][:200]}); lower max_len (now {loop.cfg.max_len}), "
            "turn on gradient_checkpointing, use method='qlora' on a GPU, or a smaller model. "
            "`ftf plan` estimates what fits."
        ) from err
    state.micro_size = max(1, state.micro_size // 2)
    accum = -(-loop.cfg.step_rows // state.micro_size)
    how = f"{state.micro_size} row(s) per micro-batch and {accum} accumulation steps (same effective batch)"
    _said_oom(loop, state, log, how)


def _said_oom(loop: Loop, state: ckpt.LoopState, log: rf.MetricsLog | None, how: str, **entry: Any) -> None:
    """Record a back-off in the state (the summary's ``oom_backoffs``), the events and the metrics."""
    state.ooms.append({"step": state.step + 1, "micro_size": state.micro_size, **entry})
    message = f"out of memory at step {state.step + 1}: continuing with {how}"
    loop.emit("oom", message=message, micro_size=state.micro_size)  # a log line, not a bar
    if log:
        log.write(step=state.step + 1, event="oom", micro_size=state.micro_size, message=message)


def eval_loss(loop: Loop, rows_per_batch: int) -> float | None:
    """Token-weighted mean loss over the eval rows (sharded across ranks), without gradients.

    ``rows_per_batch`` is the training micro-batch, which out-of-memory back-off may have shrunk.
    """
    import torch

    if not loop.eval_rows:
        return None
    amp = partial(hardware.autocast, loop.device.split(":")[0], loop.dtype)
    total, count = 0.0, 0.0
    loop.model.eval()
    with torch.no_grad():
        for part, weight in loop.microbatches(loop.eval_rows, rows_per_batch):
            with amp():
                loss, n = loop.loss_fn(rows_to_tensors(part, loop.device))
            total, count = total + weight * float(loss), count + weight * n
    loop.model.train()
    total, count = dd.sum_floats([total, count], loop.dist, loop.device)
    return total / max(count, 1.0)


def _eval_and_track(loop: Loop, state: ckpt.LoopState, log: rf.MetricsLog | None) -> bool:
    """Evaluate, update the best-so-far; True when early stopping says stop."""
    value = eval_loss(loop, state.micro_size)
    state.last_eval = value
    if value is None:
        return False
    if log:
        log.write(step=state.step, eval_loss=round(value, 5))
    if loop.probe:  # the probe keeps the best step; eval loss is only logged
        state.best_eval = value if state.best_eval is None else min(state.best_eval, value)
        return False
    if state.best_eval is None or value < state.best_eval - loop.cfg.checkpoints.min_delta:
        state.best_eval, state.best_step, state.bad_evals = value, state.step, 0
    else:
        state.bad_evals += 1
    patience = loop.cfg.checkpoints.patience
    return patience > 0 and state.bad_evals >= patience


def _should_save(cfg: TrainConfig, state: ckpt.LoopState, evaluated: bool) -> bool:
    every = cfg.checkpoints.every
    improved = evaluated and state.best_step == state.step
    return (every > 0 and state.step % every == 0) or (every == 0 and evaluated) or improved


def _save(loop: Loop, state: ckpt.LoopState) -> None:
    if loop.dist.main or loop.sharded:  # sharded, every rank takes part in gathering the tensors
        keep = loop.cfg.checkpoints.keep_last
        ckpt.save(loop.run_dir, loop.model, loop.opt, loop.scaler, state, keep, write=loop.dist.main)
    dd.barrier(loop.dist)


def _early_stop_message(state: ckpt.LoopState) -> str:
    return (
        f"early stop at step {state.step}: no better eval loss for {state.bad_evals} evals; "
        f"keeping the best (eval loss {state.best_eval:.4f} at step {state.best_step})"
    )
