"""Causal-LM loss over packed rows, computed only where labels are set."""

from __future__ import annotations

from typing import Any

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
    if n <= chunk:
        return _head_loss(head, states, wanted), n
    from torch.utils.checkpoint import checkpoint

    parts = [
        checkpoint(_head_loss, head, states[i : i + chunk], wanted[i : i + chunk], use_reentrant=False)
        for i in range(0, n, chunk)
    ]
    return sum(parts[1:], parts[0]), n


def _head_loss(head: Any, states: Any, targets: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(head(states).float(), targets, reduction="sum")


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
