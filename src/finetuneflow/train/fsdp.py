"""Fully sharded data parallelism (FSDP2) for models too big to copy onto every device.

With ``parallel='fsdp'`` under ``torchrun`` / ``accelerate launch`` each rank keeps 1/N of every
weight, gradient and AdamW state; a decoder layer's weights are all-gathered just before it runs
and dropped after, and gradients are reduce-scattered as the backward pass produces them. The
model is sharded layer by layer (each decoder layer one unit) with the loss computation as the
root unit, so the embeddings, final norm and LM head (tied or not) are one more unit.

Three things differ from the plain data-parallel path and live here:

- the loss must run *through* a sharded module's ``forward`` (FSDP's hooks gather the weights),
  so :class:`LossModule` wraps :func:`~finetuneflow.models.loss.summed_loss`;
- every forward is a collective, so all ranks must run the same number of micro-batches: a rank
  with fewer rows runs a copy of one with its loss weighted 0 (:func:`even_microbatches`);
- checkpoints hold whole tensors, so saving gathers them (:func:`full`) and loading cuts each
  rank's shard back out (:func:`like`). A finished run's weights are gathered into plain tensors
  (:func:`gather_trained`) so the adapter is saved exactly as a one-process run saves it.
"""

from __future__ import annotations

from typing import Any

from finetuneflow.models.chat import Row


def available() -> bool:
    """Whether this torch has the FSDP2 features used here (fully_shard with SUM-only reductions)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6
        return False
    return hasattr(FSDPModule, "set_force_sum_reduction_for_comms")


def _layers(model: Any) -> list[Any]:
    """The decoder layers: modules of the classes transformers says must not be split."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    return [m for m in base.modules() if type(m).__name__ in names]


def make_loss_module(model: Any, chunk: int) -> Any:
    import torch

    from finetuneflow.models.loss import summed_loss

    class LossModule(torch.nn.Module):
        """The root FSDP unit: owns the model so the loss runs inside a sharded forward."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: dict[str, Any]) -> tuple[Any, int]:
            return summed_loss(self.model, batch, chunk)

    return LossModule()


def shard(model: Any, device: str, world: int, chunk: int) -> Any:
    """Shard ``model`` in place (each decoder layer, then the rest); returns the root loss module.

    The gradients are summed, not averaged, across ranks: every rank divides its loss by the
    global count of supervised tokens already (as in the plain data-parallel path).

    Raises:
        ValueError: the model has no decoder layers FSDP can shard one by one.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.split(":")[0], (world,))
    layers = _layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layers (_no_split_modules) to shard; use parallel='ddp'"
        )
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    root = make_loss_module(model, chunk)
    fully_shard(root, mesh=mesh)
    for unit in [*layers, root]:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no AVG or PREMUL_SUM
    return root


def even_microbatches(rows: list[Row], size: int, count: int, filler: Row) -> list[tuple[list[Row], float]]:
    """This rank's ``rows`` in micro-batches of ``size`` as (rows, weight), padded with weight-0
    ones up to ``count`` (0: no padding, as in an unsharded run).

    A padding micro-batch repeats a real one (or ``filler`` when this rank got no rows, as when a
    step has fewer rows than there are ranks) so its forward and backward touch every weight.
    """
    out = [(rows[at : at + size], 1.0) for at in range(0, len(rows), size)]
    return out + [(out[0][0] if out else [filler], 0.0)] * (count - len(out))


def microbatch_count(n_rows: int, world: int, size: int) -> int:
    """The most micro-batches any rank gets when ``n_rows`` are shared out over ``world`` ranks."""
    share = -(-n_rows // world)
    return max(1, -(-share // size))


def full(t: Any) -> Any:
    """The whole tensor behind a shard (a collective: every rank must call it), or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(value: Any, ref: Any) -> Any:
    """``value`` (a whole tensor) cut to the same sharding as ``ref`` when ``ref`` is a shard."""
    if not hasattr(ref, "device_mesh") or getattr(value, "shape", None) != ref.shape:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)


def gather_trained(root: Any, keep: bool) -> None:
    """Replace each trained (sharded) parameter under ``root`` by its whole tensor in CPU memory.

    Every rank must call this (each parameter is one collective); only a rank with ``keep`` stores
    the result. One parameter is gathered at a time and moved to the CPU at once, so no GPU ever
    holds the whole model; the frozen base stays sharded (an adapter save never reads it). Done
    once after training, so that the best-checkpoint reload and the save see plain tensors.
    Parameters shared by two modules (tied embeddings) stay shared.
    """
    import torch
    from torch.distributed.fsdp import FSDPModule

    for unit in root.modules():  # the root keeps its weights gathered after a forward: shard them
        if isinstance(unit, FSDPModule):  # first, or its state-dict hook would swap the shards back
            unit.reshard()
    done: dict[int, Any] = {}
    for module in root.modules():
        for name, p in list(module._parameters.items()):
            if p is None or not p.requires_grad or not hasattr(p, "full_tensor"):
                continue
            if id(p) not in done:
                whole = p.full_tensor().detach().cpu()
                done[id(p)] = torch.nn.Parameter(whole, requires_grad=True) if keep else None
            if keep:
                module._parameters[name] = done[id(p)]
