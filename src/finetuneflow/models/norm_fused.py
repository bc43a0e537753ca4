"""One autograd function for Llama's RMSNorm that returns the compute dtype under autocast.

transformers' ``LlamaRMSNorm`` (and the norms copied from it: Mistral, Qwen 2 and 3) normalises in
fp32 and multiplies by its weight, which a LoRA base keeps in fp32: its output is fp32 although
every consumer is a bf16 matmul. Under autocast each of the 3 (attention) or 2 (MLP) adapted
projections then casts that output to bf16 again, and in the backward pass each returns an fp32
gradient that the norm's six saved-tensor passes run over (``bench/train.py --profile``: RMSNorm
and most of "casts", ~15% of a SmolLM2-135M step on a CPU). Here the norm writes bf16 once; the
backward recomputes the normalised input from the saved bf16 input and one fp32 scale per token.

The values the matmuls see are the same up to one rounding: transformers rounds the normalised
input to the input dtype before the weight multiplies it, this rounds the product.
Norms of any other formula (Gemma's ``1 + weight``) keep their own forward.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from finetuneflow.hardware import compute_dtype
from finetuneflow.models import compiled

ATTRIBUTE = "_ftf_fused_norm"  # set on the norms fuse() has wrapped


def fuse(model: Any) -> int:
    """Give every Llama-formula RMSNorm in ``model`` the fused forward; returns the count.

    The norm's class is swapped for a subclass with the fused forward (same name, same state):
    an instance-level ``forward`` would not last, because transformers' hub-kernel support resets
    the forward of these layers to their class's on every ``model.train()``."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    reference = inspect.getsource(LlamaRMSNorm.forward)
    count = 0
    for module in model.modules():
        kind = type(module)
        if getattr(kind, ATTRIBUTE, False):
            continue
        if kind not in _FUSED:
            llama_formula = kind.__name__.endswith("RMSNorm") and _source(kind) == reference
            _FUSED[kind] = (
                type(kind.__name__, (kind,), {"forward": _forward, ATTRIBUTE: True})
                if llama_formula
                else None
            )
        if fused := _FUSED[kind]:
            module.__class__ = fused
            count += 1
    return count


_FUSED: dict[type, type | None] = {}  # norm class -> its fused subclass (None: another formula)


def _source(kind: type) -> str:
    try:
        return inspect.getsource(kind.forward)  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return ""


def _forward(self: Any, hidden_states: Any) -> Any:
    return _function().apply(hidden_states, self.weight, float(self.variance_epsilon))


@functools.cache  # built on first use: importing this module does not import torch
def _function() -> Any:
    import torch

    def normed(x: Any, weight: Any, eps: float, dtype: Any) -> tuple[Any, Any]:
        """(the norm's output in ``dtype``, one fp32 scale per token)"""
        wide = x.float()
        scale = torch.rsqrt(wide.square().mean(-1, keepdim=True) + eps)
        return (wide * scale * weight).to(dtype), scale

    def normed_grad(x: Any, weight: Any, scale: Any, grad: Any) -> Any:
        """The input's gradient, from the saved input and scale."""
        normed = x.float() * scale
        g = grad.float() * weight
        dot = (g * normed).mean(-1, keepdim=True)
        return ((g - normed * dot) * scale).to(x.dtype)

    # one fused loop each on a CPU (models/compiled.py): ~4x faster than the eager passes below
    forward_kernel, backward_kernel = compiled.Kernel(normed), compiled.Kernel(normed_grad)

    class RMSNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, eps: float) -> Any:
            # what its consumers' matmuls read; without autocast what the plain norm returns
            dtype = compute_dtype(x.device.type, torch.promote_types(weight.dtype, x.dtype))
            if forward_kernel.applies(x):
                out, scale = forward_kernel(x, weight, eps, dtype)
            else:
                wide = x.to(torch.float32, copy=True)  # never x itself: it is written in place
                scale = torch.rsqrt(wide.square().mean(-1, keepdim=True).add_(eps))  # (..., 1) fp32
                out = wide.mul_(scale).mul_(weight).to(dtype)
            ctx.save_for_backward(x, weight, scale)
            return out

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x, weight, scale = ctx.saved_tensors
            if backward_kernel.applies(x) and not ctx.needs_input_grad[1]:  # LoRA: the norms are frozen
                return backward_kernel(x, weight, scale, grad), None, None
            normed = x.to(torch.float32, copy=True).mul_(scale)
            g = grad.to(torch.float32, copy=True)
            grad_weight = None
            if ctx.needs_input_grad[1]:  # full fine-tuning trains the norms
                grad_weight = (g * normed).reshape(-1, normed.shape[-1]).sum(0).to(weight.dtype)
            g = g.mul_(weight)
            dot = (g * normed).mean(-1, keepdim=True)
            grad_x = g.sub_(normed.mul_(dot)).mul_(scale).to(x.dtype)
            return grad_x, grad_weight, None

    RMSNorm.kernels = (forward_kernel, backward_kernel)  # type: ignore[attr-defined]  # for tests
    return RMSNorm
