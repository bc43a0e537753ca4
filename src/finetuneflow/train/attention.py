"""CPU attention for training on packed rows: causal attention inside each packed example, with
no (rows x heads x len x len) mask or probabilities in memory, and a matmul fallback for the rest.

Training (the module in train mode, ``position_ids`` given, no KV cache): a packed row holds
several examples whose positions restart at 0; each example is one causal block. Blocks of up to
``MATMUL_MAX_LEN`` tokens attend by batched matmuls (the query heads of one kv head stacked, scale
and causal mask inside ``baddbmm``, torch's softmax kernel), longer ones through torch's flash
SDPA kernel with ``is_causal`` (fp32 accumulation, nothing quadratic saved). The dense
block-diagonal mask, its additions, the fp32 softmax copies and the softmax backward's elementwise
passes were ~half of a SmolLM2-135M step at 512-token rows (``bench/train.py --profile``); blocks
also skip the cross-example work. The numbers are eager's up to bf16 rounding.

Anything else (evaluation, generation with a cache or padding): transformers' eager attention,
except that one autograd function does the softmax in fp32 and saves only the 16-bit
probabilities (2 bytes per element instead of eager's 6). Registered as ``"ftf_eager"``.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

NAME = "ftf_eager"


@functools.cache  # built on first use: importing this module does not import torch
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
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Same contract as transformers' ``eager_attention_forward``: (output (B, T, H, D), probs or
    None when the packed blocks were used)."""
    import torch

    positions = kwargs.get("position_ids")
    window = kwargs.get("sliding_window")  # Gemma 3's local layers: rows past it need the mask path
    blocks_fit = (not window or query.shape[2] <= window) and query.shape[2] == key.shape[2]
    if module.training and blocks_fit and positions is not None and not dropout:
        return packed_causal_attention(query, key, value, positions, scaling), None
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: repeat the kv heads
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = _softmax_function().apply(scores, query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def blocks(positions: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each packed example in a row: a new one starts where the position is 0."""
    starts = [t for t, p in enumerate(positions) if p == 0 or t == 0]
    return list(zip(starts, [*starts[1:], len(positions)], strict=True))


# Examples up to this many tokens attend by matmuls (``_block_by_matmul``); longer ones by torch's
# flash kernel, whose backward has a large fixed cost per call on a CPU. Forward and backward of one
# causal block on one core (bf16, 9 query / 3 kv heads of 64), matmuls in query parts against flash,
# AMD EPYC with AVX-512 BF16: 1.7 vs 5.5 ms at 160 tokens, 5.3 vs 8.5 at 256, 8.8 vs 22.6 at 448,
# 10.5 vs 29.0 at 512, 25.5 vs 42.8 at 768. The matmul path keeps its probabilities for the
# backward (~6 MB a layer at 768 tokens), flash none: the bound keeps that in proportion.
MATMUL_MAX_LEN = 768

# Blocks longer than SPLIT_FROM tokens go in query parts of about QUERY_ROWS positions. A causal
# block's later queries need more keys than its earlier ones: each part's scores stop at its last
# query (448 tokens in 4 parts: 5/8 of the full square) and each part's probabilities stay nearer
# the cache. Alone, same machine: 448 tokens whole 15.8 ms, in parts of 96, 128 or 160 rows 9.4,
# 8.8, 8.7; but 128 tokens in two parts 1.38 against 1.15 whole, and in a step (packed rows, the
# heads interleaved) blocks of 150-200 tokens lost in parts. In the bench's step (examples of
# 48-423 tokens, ``bench/train.py --profile 2 --ab query_parts``, 2 rounds) attention's matmuls
# took ~210 ms less per step, ~1% of it; the larger gain is the longer examples kept off flash.
QUERY_ROWS = 128
SPLIT_FROM = 256


@functools.lru_cache(maxsize=16)
def kept_probabilities(row_len: int) -> int:
    """Probabilities the packed path keeps for the backward, per head, for a ``row_len``-token row
    at worst over the ways examples can fill it (longer than the matmul path takes, they go to
    flash, which keeps none): each example's query parts as :func:`_block_by_matmul` cuts them.
    For train/memory.py's estimate; a row of one example is not always the worst (256 tokens are
    kept whole, 300 in three parts)."""
    worst = [0] * (row_len + 1)
    kept = [_block_probabilities(t) for t in range(min(row_len, MATMUL_MAX_LEN) + 1)]
    for n in range(1, row_len + 1):
        worst[n] = max(kept[t] + worst[n - t] for t in range(1, min(n, MATMUL_MAX_LEN) + 1))
    return worst[row_len]


def _block_probabilities(t: int) -> int:
    return sum((hi - lo) * hi for lo, hi in _query_parts(t))


def _query_parts(t: int) -> list[tuple[int, int]]:
    """(first, end) query positions of each part of a ``t``-token causal block."""
    parts = math.ceil(t / QUERY_ROWS) if t > SPLIT_FROM else 1
    return list(itertools.pairwise([t * i // parts for i in range(parts + 1)]))


def packed_causal_attention(query: Any, key: Any, value: Any, position_ids: Any, scaling: float) -> Any:
    """Causal attention within each example of packed rows: (B, H, T, D) in, (B, T, H, D) out.

    The rows and examples are cut with ``split`` (its backward is one concatenation; slicing's
    would fill a zero tensor of the whole input per example) and grouped-query heads are shared
    inside the kernels, never repeated in memory. Each block's output is made (1, t, H, D), the
    layout the output projection reads, so the concatenation is the only copy."""
    import torch

    rows = []
    split = zip(query.split(1), key.split(1), value.split(1), position_ids.tolist(), strict=True)
    for q, k, v, positions in split:
        sizes = [e - s for s, e in blocks(positions)]
        parts = [
            _block(qq, kk, vv, scaling)
            for qq, kk, vv in zip(q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2), strict=True)
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.contiguous()


def _block(query: Any, key: Any, value: Any, scaling: float) -> Any:
    """One causal example: (1, H, t, D) query, (1, KV, t, D) key and value in; (1, t, H, D) out."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    if query.shape[2] <= MATMUL_MAX_LEN:
        return _block_by_matmul(query, key, value, scaling)
    groups = query.shape[1] // key.shape[1]
    return sdpa(query, key, value, is_causal=True, scale=scaling, enable_gqa=groups > 1).transpose(1, 2)


def _block_by_matmul(query: Any, key: Any, value: Any, scaling: float) -> Any:
    """Eager attention's numbers for one causal block (scores in the compute dtype, softmax in
    fp32 inside torch's kernel, probabilities in the compute dtype), with the query heads that
    share a key/value head stacked into one batched matmul (no repeated keys) and the scale and
    causal mask applied by that matmul (``baddbmm``). The queries go in parts of about
    ``QUERY_ROWS`` positions, each against the keys up to its last position."""
    import torch

    _, heads, t, dim = query.shape
    kv = key.shape[1]
    groups = heads // kv
    spans = _query_parts(t)
    outs = []
    for (lo, hi), q in zip(spans, query[0].split([hi - lo for lo, hi in spans], dim=1), strict=True):
        stacked = q.reshape(kv, groups * (hi - lo), dim)  # heads g*j .. g*j+g-1 share kv head j
        mask = _causal_mask(lo, hi, groups, query.dtype, str(query.device))
        keys = key[0, :, :hi].transpose(1, 2)
        probs = torch.softmax(torch.baddbmm(mask, stacked, keys, alpha=scaling), dim=-1)
        outs.append(torch.bmm(probs, value[0, :, :hi]).view(heads, hi - lo, dim))  # (kv, g*rows, D)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.transpose(0, 1).unsqueeze(0)


@functools.lru_cache(maxsize=128)
def _causal_mask(lo: int, hi: int, groups: int, dtype: Any, device: str) -> Any:
    """(groups * (hi - lo), hi) for the queries at positions lo..hi-1: 0 where a query may look,
    -inf at the keys after it; one copy per query head of the group."""
    import torch

    future = torch.full((hi - lo, hi), float("-inf"), dtype=dtype, device=device).triu_(lo + 1)
    return future.repeat(groups, 1)


def register() -> str:
    """Make ``attn_implementation="ftf_eager"`` known to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, ftf_eager_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
