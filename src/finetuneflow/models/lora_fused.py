"""One autograd function for a LoRA linear layer: ``x @ W.T + scale * (x @ A.T) @ B.T``.

peft's layer runs the frozen base, then ``lora_B(lora_A(x)) * scaling`` and adds the two: under
bf16 autocast that is a cast of A and B per call, and a multiply, an add and their backward passes
over every (tokens x out_features) output, plus the casts of A's and B's gradients (about a fifth
of a SmolLM2-135M LoRA step on a CPU, ``bench/train.py --profile``: "LoRA elementwise" and part of
"casts"). Here the scale is folded into a bf16 copy of B (r x out, tiny), the adapter's product
is accumulated into the base output by the matmul itself (``addmm_``), and the backward pass
is four matmuls, two of them accumulating too. The numbers differ from peft's only in rounding:
the adapter's contribution is added in the matmul's fp32 accumulator instead of in bf16 after it.

:func:`fuse` installs it on every plain LoRA ``Linear`` of a model; anything it does not cover
(DoRA, LoRA dropout, a bias, several or disabled or merged adapters, a quantized base) keeps
peft's own forward, checked on every call so that toggling adapters keeps working.
"""

from __future__ import annotations

import functools
from typing import Any

from finetuneflow.hardware import compute_dtype

ATTRIBUTE = "_ftf_fused_lora"  # set on the layers fuse() has wrapped


def fuse(model: Any) -> int:
    """Route the forward of each peft LoRA ``Linear`` in ``model`` through the fused function
    where it applies; returns how many layers were wrapped."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and not getattr(module, ATTRIBUTE, False):
            module.forward = _forward_of(module)  # type: ignore[method-assign]  # this instance only
            setattr(module, ATTRIBUTE, True)
            count += 1
    return count


def _forward_of(layer: Any) -> Any:
    plain = type(layer).forward

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        adapter = _single_plain_adapter(layer) if not args and not kwargs else None
        if adapter is None:
            return plain(layer, x, *args, **kwargs)
        scale = layer.scaling[adapter]
        a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
        return _function().apply(x, layer.base_layer.weight, a, b, scale)

    return forward


def _single_plain_adapter(layer: Any) -> str | None:
    """The one active adapter when it is plain LoRA on a plain linear base, else None."""
    import torch

    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    (name,) = layer.active_adapters
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_bias.get(name):
        return None
    base = layer.base_layer
    if type(base) is not torch.nn.Linear or base.bias is not None:
        return None
    if not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    return str(name)


@functools.cache  # built on first use: importing this module does not import torch
def _function() -> Any:
    import torch

    class LoraLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, a: Any, b: Any, scale: float) -> Any:
            dtype = compute_dtype(x.device.type, weight.dtype)
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            w, a16, scaled_b = weight.to(dtype), a.to(dtype), (b * scale).to(dtype)
            down = flat @ a16.T  # (tokens, r)
            out = (flat @ w.T).addmm_(down, scaled_b.T)  # base + adapter in one accumulation
            ctx.save_for_backward(flat, down, w, a16, scaled_b)
            ctx.scale, ctx.x_dtype, ctx.x_shape = scale, x.dtype, x.shape
            ctx.weight_dtypes = (a.dtype, b.dtype)
            return out.view(*x.shape[:-1], w.shape[0])

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            flat, down, w, a16, scaled_b = ctx.saved_tensors
            g = grad.reshape(-1, grad.shape[-1]).to(w.dtype)
            g_down = g @ scaled_b  # (tokens, r): the gradient at A's output
            grad_x = grad_a = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_x = (g @ w).addmm_(g_down, a16).view(ctx.x_shape).to(ctx.x_dtype)
            if ctx.needs_input_grad[2]:
                grad_a = (g_down.T @ flat).to(ctx.weight_dtypes[0])
            if ctx.needs_input_grad[3]:
                grad_b = (g.T @ down).to(ctx.weight_dtypes[1]).mul_(ctx.scale)
            return grad_x, None, grad_a, grad_b, None

    return LoraLinear
