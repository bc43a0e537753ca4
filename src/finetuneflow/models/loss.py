"""Causal-LM loss over packed rows, computed only where labels are set."""

from __future__ import annotations

import functools
from typing import Any

from finetuneflow.hardware import compute_dtype
from finetuneflow.models.chat import IGNORE, Row


def rows_to_tensors(rows: list[Row], device: str) -> dict[str, Any]:
    """Stack rows into (batch, row_len) long tensors."""
    import torch

    return {
        "input_ids": torch.tensor([r.input_ids for r in rows], device=device),
        "labels": torch.tensor([r.labels for r in rows], device=device),
        "position_ids": torch.tensor([r.position_ids for r in rows], device=device),
    }


def _causal_lm(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)  # a PeftModel wraps the causal LM
    return get_base() if callable(get_base) else model


def summed_loss(model: Any, batch: dict[str, Any], chunk: int = 4096) -> tuple[Any, int]:
    """(sum of token cross-entropies, number of supervised tokens) for one batch of packed rows.

    Runs the decoder, then the LM head only on supervised positions: on a 49k vocabulary the full
    (batch, len, vocab) logits are most of the memory, and prompts/system text never need them.
    More than ``chunk`` supervised tokens go through the head in chunks whose logits are recomputed
    in the backward pass, so at most (chunk, vocab) logits exist at once (4096 x 49152 fp32 = 0.8 GB).
    ``attention_mask`` stays None so transformers builds the block-diagonal mask from the
    restarting ``position_ids`` (examples in a row cannot see each other).
    """
    lm = _causal_lm(model)
    backbone = getattr(lm, lm.base_model_prefix)
    hidden = backbone(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False
    ).last_hidden_state  # (B, T, H)
    targets = batch["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != IGNORE
    n = int(keep.sum())
    head = lm.get_output_embeddings()
    if n == 0:  # still through the head: under FSDP every rank's backward must reach every weight
        return (hidden.sum() + head(hidden[:1, 0]).float().sum()) * 0.0, 0
    states, wanted = hidden[:, :-1][keep], targets[keep]  # (n, H), (n,)
    # Gemma 2 squashes its logits (cap * tanh(logits / cap)) before the softmax; the fused head
    # computes plain logits, so such a model takes the plain head
    cap = float(getattr(lm.config, "final_logit_softcapping", None) or 0.0)
    if fused_head_applies(head) and not cap:
        return fused_head_loss(states, head.weight, wanted), n
    if n <= chunk:
        return _head_loss(head, states, wanted, cap), n
    from torch.utils.checkpoint import checkpoint

    parts = [
        checkpoint(_head_loss, head, states[i : i + chunk], wanted[i : i + chunk], cap, use_reentrant=False)
        for i in range(0, n, chunk)
    ]
    return sum(parts[1:], parts[0]), n


def _head_loss(head: Any, states: Any, targets: Any, cap: float = 0.0) -> Any:
    import torch
    import torch.nn.functional as F

    logits = head(states).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="sum")


# Logits per chunk of the fused head (its rows: this over the vocabulary). With 16-bit products
# ~8M fp32 logits (32 MB; 170 rows of SmolLM2's 49k vocabulary) keeps each chunk's softmax passes
# near the cache while the chunk's matmul stays large enough to run at full speed (64-256 rows
# within 10% of each other on one AMX core; 2^23 the fastest of 2^20-2^25 on a Zen 5 core).
FUSED_CHUNK_LOGITS = 1 << 23
# fp32 products (MKL's sgemm) run short chunks slower: on an Ice Lake core the head of 2,720 tokens
# (logits and states' gradient) took 2.26 s in chunks of 682 rows (2^25 logits, 128 MB) against
# 2.65 s in chunks of 170 (medians of 6; 2^26 only 2% less again, at twice the memory).
FUSED_CHUNK_LOGITS_FP32 = 1 << 25


def fused_chunk_logits(fp32: bool) -> int:
    """Logits per chunk of the fused head whose products run in fp32 (else in 16 bits)."""
    return FUSED_CHUNK_LOGITS_FP32 if fp32 else FUSED_CHUNK_LOGITS


def fused_head_applies(head: Any) -> bool:
    """A frozen plain linear head (every LoRA run): its loss and input gradient in one pass."""
    import torch

    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def fused_head_loss(states: Any, weight: Any, targets: Any) -> Any:
    """Summed cross-entropy of ``states @ weight.T`` against ``targets`` without the (n, vocab)
    logits ever existing: chunk by chunk, the logits, their log-sum-exp and, when a gradient is
    wanted, ``(softmax - onehot) @ weight`` (the gradient of the states) are computed while the
    chunk is in cache, so the backward pass only scales the saved (n, hidden) gradient.

    Against ``cross_entropy(head(states).float())``: the same bf16 logits and fp32 softmax, one
    exp pass instead of log-softmax's forward and backward passes over fp32 copies, and no
    (n, vocab) fp32 tensor saved for the backward (~35% less time for the head on one CPU core).
    """
    return _head_function().apply(states, weight, targets)


@functools.cache  # built on first use: importing this module does not import torch
def _head_function() -> Any:
    import torch

    class FusedHeadLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, states: Any, weight: Any, targets: Any) -> Any:
            dtype = compute_dtype(states.device.type, weight.dtype)
            x, w = states.to(dtype), weight.to(dtype)
            rows = min(x.shape[0], max(8, fused_chunk_logits(dtype == torch.float32) // w.shape[0]))
            grad = torch.empty_like(x) if ctx.needs_input_grad[0] else None
            total = torch.zeros((), dtype=torch.float32, device=states.device)
            # one fp32 buffer for all chunks: a fresh 32 MB tensor per chunk would come from mmap and
            # pay its page faults again every time (a bf16 product keeps its own output: writing
            # into a given ``out=`` took a slower kernel; an fp32 one is written in place)
            high = torch.empty(rows, w.shape[0], dtype=torch.float32, device=x.device)
            for i in range(0, x.shape[0], rows):
                n = min(rows, x.shape[0] - i)
                if dtype == torch.float32:  # the product is already the fp32 logits: no copy pass
                    logits = torch.mm(x[i : i + n], w.T, out=high[:n])
                else:
                    logits = high[:n].copy_(x[i : i + n] @ w.T)  # a plain head's logits, in fp32
                wanted = targets[i : i + n, None]
                top = logits.amax(dim=-1, keepdim=True)
                picked = logits.gather(1, wanted)
                probs = logits.sub_(top).exp_()
                mass = probs.sum(dim=-1, keepdim=True)
                total += (top + mass.log() - picked).sum()
                if grad is not None:
                    probs.mul_(mass.reciprocal()).scatter_add_(1, wanted, torch.full_like(picked, -1.0))
                    grad[i : i + n] = probs.to(dtype) @ w
            ctx.save_for_backward(grad)
            ctx.states_dtype = states.dtype
            return total

        @staticmethod
        def backward(ctx: Any, upstream: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return (grad * upstream).to(ctx.states_dtype), None, None

    return FusedHeadLoss


def mean_loss(model: Any, rows: list[Row], device: str, batch_size: int, autocast_ctx: Any) -> float:
    """Token-weighted mean loss over ``rows`` without gradients (eval)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            with autocast_ctx():
                loss, n = summed_loss(model, rows_to_tensors(rows[i : i + batch_size], device))
            total += float(loss)
            count += n
    return total / max(count, 1)
