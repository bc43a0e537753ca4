"""Data parallelism under ``torchrun`` / ``accelerate launch``: same command, same config, N processes.

The launcher sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init` joins the process group
(NCCL on GPUs, gloo on CPUs). Every rank plans the same steps from the same seed, trains on its
share of each step's rows, and the gradients are summed across ranks before the optimizer step.
Because each rank divides its loss by the *global* count of supervised tokens, the summed gradient
is exactly the single-process one: N processes reach the same weights as one, only faster.

We sum gradients ourselves rather than wrapping the model in ``DistributedDataParallel``: the loss
runs the decoder and the LM head separately (the head only on supervised positions), which
bypasses a DDP wrapper's forward hooks. LoRA gradients are small, so one flat all-reduce per step
costs little. Only rank 0 writes files.

With ``parallel='fsdp'`` (or ``accelerate launch --use_fsdp``) the weights are sharded instead of
copied: see train/fsdp.py. Rows are shared out the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from finetuneflow.errors import TrainingError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    """The launcher's variables (a plain ``ftf train`` is rank 0 of 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> Dist:
    """Join the process group when launched with several processes (idempotent)."""
    dist = from_env()
    if not dist.active:
        return dist
    import torch.distributed as td

    if device.startswith("cuda"):
        import torch

        _one_gpu_each(dist, torch.cuda.device_count())
        torch.cuda.set_device(dist.local_rank)  # NCCL and FSDP's device mesh use the current device
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist


def _one_gpu_each(dist: Dist, gpus: int) -> None:
    """Every rank of this machine needs a GPU of its own (two NCCL ranks cannot share one): say so
    on every rank before any joins the group, rather than fail in set_device or hang in NCCL.
    torchrun and accelerate set LOCAL_WORLD_SIZE; without it only the ranks past the GPUs know."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or dist.local_rank + 1
    if local > gpus:
        raise TrainingError(
            f"{local} processes on this machine but {gpus} GPU(s): start one process per GPU "
            f"(torchrun --nproc_per_node {gpus}), or train on the CPUs with device: cpu"
        )


def device_for(dist: Dist, device: str) -> str:
    """One GPU per local rank; CPUs are shared."""
    if dist.active and device == "cuda":
        return f"cuda:{dist.local_rank}"
    return device


def my_rows(rows: list[Any], dist: Dist) -> list[Any]:
    """This rank's share of a step's rows (every rank holds the same plan)."""
    return rows[dist.rank :: dist.world] if dist.active else rows


def sum_gradients(params: list[Any], dist: Dist) -> None:
    """All-reduce (sum) the gradients of ``params`` in one flat buffer."""
    if not dist.active:
        return
    import torch
    import torch.distributed as td

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    td.all_reduce(flat)
    at = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[at : at + n].view_as(p).clone()
        at += n


def sum_floats(values: list[float], dist: Dist, device: str) -> list[float]:
    """Sums of ``values`` over all ranks (losses and token counts for logging and eval)."""
    if not dist.active:
        return values
    import torch
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t)
    return [float(v) for v in t.tolist()]


def broadcast(value: Any, dist: Dist) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run id)."""
    if not dist.active:
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def close(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
