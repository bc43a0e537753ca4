"""A matmul attention for CPU training that keeps one 16-bit copy of the probabilities.

transformers' eager attention computes ``softmax(scores, dtype=float32).to(bf16)``: autograd then
saves the fp32 softmax output for the softmax's backward *and* the bf16 copy for the value matmul's,
6 bytes per (head, query, key) per layer. Here one autograd function does the softmax in fp32 and
saves only the 16-bit probabilities, which the value matmul saves anyway (the same tensor), and
computes the softmax gradient from them in fp32: 2 bytes per element instead of 6, the same
forward values, and a gradient that differs by the rounding of the probabilities to bf16 (the
precision autocast already trains at). Registered with transformers as ``"ftf_eager"``.
"""

from __future__ import annotations

from typing import Any

NAME = "ftf_eager"


def _softmax_function() -> Any:
    import torch

    class Softmax16(torch.autograd.Function):
        """softmax over the last axis in fp32, returned (and saved) in ``dtype``."""

        @staticmethod
        def forward(ctx: Any, scores: Any, dtype: Any) -> Any:
            probs = torch.softmax(scores.float(), dim=-1).to(dtype)
            ctx.save_for_backward(probs)
            ctx.scores_dtype = scores.dtype
            return probs

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (probs,) = ctx.saved_tensors
            p, g = probs.float(), grad.float()
            return (p * (g - (g * p).sum(dim=-1, keepdim=True))).to(ctx.scores_dtype), None

    return Softmax16


def ftf_eager_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[Any, Any]:
    """Same contract as transformers' ``eager_attention_forward``: (output (B, T, H, D), probs)."""
    import torch

    groups = query.shape[1] // key.shape[1]  # grouped-query attention: repeat the kv heads
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = _SOFTMAX().apply(scores, query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


_CACHE: dict[str, Any] = {}


def _SOFTMAX() -> Any:  # noqa: N802 - reads like the class it returns
    if "fn" not in _CACHE:
        _CACHE["fn"] = _softmax_function()
    return _CACHE["fn"]


def register() -> str:
    """Make ``attn_implementation="ftf_eager"`` known to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, ftf_eager_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
