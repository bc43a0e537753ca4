"""Fused training paths against the plain ones they replace: the same losses and gradients.

The fused LM head (models/loss.py) computes cross-entropy and the states' gradient chunk by chunk
in the forward pass; the fused LoRA layer (models/lora_fused.py) runs base + adapter as one
autograd function; the fused RMSNorm (models/norm_fused.py) writes the compute dtype. These tests
run the tiny model both ways and compare.
"""

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from finetuneflow.models import lora_fused, norm_fused
from finetuneflow.models import loss as loss_module
from finetuneflow.models.loss import fused_head_applies, summed_loss
from finetuneflow.train import model_setup
from finetuneflow.train.config import LoraSettings, TrainConfig
from finetuneflow.train.model_setup import build_model

FUSE, FUSE_NORMS = lora_fused.fuse, norm_fused.fuse  # before any test swaps them out
# Relative gradient difference allowed under bf16 autocast: the fused paths round at other points
# (and sum the norms' input gradients in bf16), up to 2.1% on this hidden-64 model; a 10% error
# in any one scale gives 10%.
BF16_TOLERANCE = 5e-2


def _batch(rows: int = 2, length: int = 40) -> dict[str, Any]:
    torch.manual_seed(3)
    ids = torch.randint(0, 300, (rows, length))
    labels = ids.clone()
    labels[:, : length // 3] = -100  # a prompt: no loss there
    positions = torch.cat([torch.arange(length // 2), torch.arange(length - length // 2)]).repeat(rows, 1)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def _loss_and_grads(
    tiny_model: Path,
    dtype: Any,
    monkeypatch: pytest.MonkeyPatch,
    head: bool = False,
    lora: bool = False,
    norms: bool = False,
    method: str = "lora",
) -> Any:
    """Loss, supervised tokens and trained gradients of one batch, with the chosen fusions on."""
    monkeypatch.setattr(loss_module, "fused_head_applies", lambda h: head and fused_head_applies(h))
    monkeypatch.setattr(model_setup.lora_fused, "fuse", FUSE if lora else lambda model: 0)
    monkeypatch.setattr(model_setup.norm_fused, "fuse", FUSE_NORMS if norms else lambda model: 0)
    cfg = TrainConfig(base_model=str(tiny_model), method=method, lora=LoraSettings(r=4, alpha=8))
    torch.manual_seed(0)
    model = build_model(tiny_model, cfg, "cpu", dtype).model.train()
    fused_norms = [m for m in model.modules() if getattr(m, norm_fused.ATTRIBUTE, False)]
    assert len(fused_norms) == (5 if norms else 0)  # 2 layers x 2, and the final norm
    with torch.no_grad():  # fresh LoRA B matrices are zero, norm weights one: make them matter
        for name, p in model.named_parameters():
            if "lora_" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        loss, n = summed_loss(model, _batch())
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


CASES = [  # (fusion, method): full fine-tuning trains the norms' weights, so their gradients count too
    ("head", "lora"),
    ("lora", "lora"),
    ("norms", "lora"),
    ("norms", "full"),
]


@pytest.mark.parametrize(("fusion", "method"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_each_fusion_gives_the_plain_paths_loss_and_gradients(
    tiny_model: Path, fusion: str, method: str, dtype: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_loss, plain_n, plain = _loss_and_grads(tiny_model, dtype, monkeypatch, method=method)
    fused_loss, fused_n, fused = _loss_and_grads(
        tiny_model, dtype, monkeypatch, method=method, **{fusion: True}
    )
    assert fused_n == plain_n == 2 * (40 - 40 // 3)  # targets are the labels shifted by one: 27 a row
    assert any("norm" in name for name in plain) == (method == "full")
    _same(plain_loss, plain, fused_loss, fused, 1e-5 if dtype is None else BF16_TOLERANCE)


def test_all_fusions_together_train_like_the_plain_step(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_loss, _, plain = _loss_and_grads(tiny_model, torch.bfloat16, monkeypatch)
    fused_loss, _, fused = _loss_and_grads(tiny_model, torch.bfloat16, monkeypatch, True, True, True)
    _same(plain_loss, plain, fused_loss, fused, BF16_TOLERANCE)


def _same(plain_loss: Any, plain: dict[str, Any], fused_loss: Any, fused: dict[str, Any], tol: float) -> None:
    torch.testing.assert_close(fused_loss, plain_loss, rtol=tol, atol=tol)
    assert plain.keys() == fused.keys() and plain
    worst = max((fused[k] - g).norm().item() / g.norm().item() for k, g in plain.items())  # g = 0: nan
    print(f"worst relative gradient difference: {worst:.2e}")
    assert worst <= tol


def test_fused_head_is_the_path_lora_trains_and_its_chunks_add_up(tiny_model: Path) -> None:
    cfg = TrainConfig(base_model=str(tiny_model), lora=LoraSettings(r=4, alpha=8))
    model = build_model(tiny_model, cfg, "cpu", torch.bfloat16).model
    assert fused_head_applies(model.get_output_embeddings())  # LoRA: a frozen plain head
    full = build_model(tiny_model, TrainConfig(base_model=str(tiny_model), method="full"), "cpu").model
    assert not fused_head_applies(full.get_output_embeddings())  # a trained head: the plain path

    torch.manual_seed(0)
    weight = torch.randn(300, 16)
    states = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    expected = torch.nn.functional.cross_entropy(states @ weight.T, targets, reduction="sum")
    (want,) = torch.autograd.grad(expected, states)
    assert loss_module.fused_chunk_logits(True) > loss_module.fused_chunk_logits(False)
    old = loss_module.FUSED_CHUNK_LOGITS_FP32
    try:
        loss_module.FUSED_CHUNK_LOGITS_FP32 = 300 * 8  # fp32: 8 rows a chunk, 7 chunks, the last one short
        got = loss_module.fused_head_loss(states, weight, targets)
        (grad,) = torch.autograd.grad(got * 2, states)  # the upstream gradient scales it
    finally:
        loss_module.FUSED_CHUNK_LOGITS_FP32 = old
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, 2 * want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(loss_module.fused_head_loss(states, weight, targets), expected)


def test_fused_lora_covers_plain_layers_and_leaves_the_rest_to_peft(tiny_model: Path) -> None:
    cfg = TrainConfig(base_model=str(tiny_model), lora=LoraSettings(r=4, alpha=8))
    model = build_model(tiny_model, cfg, "cpu", torch.bfloat16).model
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert layers and all(getattr(m, lora_fused.ATTRIBUTE, False) for m in layers)
    assert all(lora_fused._single_plain_adapter(m) == "default" for m in layers)
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 base, as training runs it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():  # peft's own path: the base alone
            base = model(input_ids=ids).logits
            assert all(lora_fused._single_plain_adapter(m) is None for m in layers)
        again = model(input_ids=ids).logits
    assert (tuned - base).abs().max() > 1e-2  # the adapter counts when enabled, not when disabled
    torch.testing.assert_close(again, tuned)

    dropout = TrainConfig(base_model=str(tiny_model), lora=LoraSettings(r=4, alpha=8, dropout=0.1))
    model = build_model(tiny_model, dropout, "cpu").model
    assert all(lora_fused._single_plain_adapter(m) is None for m in model.modules() if hasattr(m, "lora_A"))


@pytest.mark.parametrize(
    ("matmul_max", "query_rows"),
    [(0, 128), (10**6, 128), (10**6, 4)],
    ids=["flash-kernel", "matmul", "matmul-parts"],
)
def test_packed_attention_blocks_match_masked_attention_by_either_kernel(
    matmul_max: int, query_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both per-example kernels (flash for long examples, matmuls for short, whole or in query
    parts: 16 tokens in parts of 4, 9 in 3 parts of 3) against dense attention with the
    block-diagonal causal mask and repeated kv heads: outputs and gradients."""
    from finetuneflow.train import attention

    monkeypatch.setattr(attention, "MATMUL_MAX_LEN", matmul_max)
    monkeypatch.setattr(attention, "QUERY_ROWS", query_rows)
    monkeypatch.setattr(attention, "SPLIT_FROM", 0)
    torch.manual_seed(0)
    lengths = [[5, 9, 2], [16]]  # two packed rows, one with three examples
    positions = torch.tensor([[p for n in row for p in range(n)] for row in lengths])
    q, k, v = (torch.randn(2, heads, 16, 8, requires_grad=True) for heads in (6, 2, 2))
    upstream = torch.randn(2, 16, 6, 8)

    (attention.packed_causal_attention(q, k, v, positions, 0.3) * upstream).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    example = torch.cumsum(positions.eq(0), dim=1)
    allowed = example[:, :, None].eq(example[:, None, :]) & torch.ones(16, 16, dtype=torch.bool).tril()
    scores = q @ k.repeat_interleave(3, 1).transpose(2, 3) * 0.3
    probs = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    expected = (probs @ v.repeat_interleave(3, 1)).transpose(1, 2)
    (expected * upstream).sum().backward()
    out = attention.packed_causal_attention(q, k, v, positions, 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous()
    for mine, want in zip(got, (q.grad, k.grad, v.grad), strict=True):
        torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-5)


def _kept(lengths: list[int], monkeypatch: pytest.MonkeyPatch) -> int:
    """Probabilities the packed path's softmax calls produce for one row of ``lengths`` examples."""
    from finetuneflow.train import attention

    kept: list[int] = []
    softmax = torch.softmax

    def counting(x: torch.Tensor, dim: int) -> torch.Tensor:
        kept.append(x.numel())
        return softmax(x, dim=dim)

    with monkeypatch.context() as m:
        m.setattr(torch, "softmax", counting)
        positions = torch.tensor([[p for n in lengths for p in range(n)]])
        q, k, v = (torch.randn(1, heads, sum(lengths), 8) for heads in (6, 2, 2))
        attention.packed_causal_attention(q, k, v, positions, 0.3)
    return sum(kept) // 6


@pytest.mark.parametrize(
    ("worst", "others"),
    [([200], [[100, 100], [150, 50]]), ([512], [[256, 256], [300, 212]]), ([256, 44], [[300], [150, 150]])],
)
def test_the_memory_estimate_counts_the_probabilities_the_packed_path_keeps_at_worst(
    worst: list[int], others: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """train/memory.py sizes attention by ``kept_probabilities``: the most that the softmax outputs
    of every example's query parts can add up to in a row, over the ways examples fill it (300
    tokens: a 256-token example is kept whole, a 300-token one in three parts)."""
    from finetuneflow.train.attention import kept_probabilities

    row_len = sum(worst)
    assert _kept(worst, monkeypatch) == kept_probabilities(row_len)
    for lengths in others:
        assert _kept(lengths, monkeypatch) < kept_probabilities(row_len)
    generator = random.Random(row_len)
    for _ in range(5):  # random packings never exceed it
        cuts = sorted(generator.sample(range(1, row_len), 3))
        lengths = [b - a for a, b in itertools.pairwise([0, *cuts, row_len])]
        assert _kept(lengths, monkeypatch) <= kept_probabilities(row_len)


@pytest.mark.parametrize("cap", [30.0, None])
def test_a_softcapped_head_trains_on_the_logits_the_model_scores(cap: float | None) -> None:
    """Gemma 2 squashes its logits before the softmax (``final_logit_softcapping``): our loss is
    transformers' own (its forward with labels), capped or not, with LoRA on the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=cap, attn_logit_softcapping=None,
    )  # fmt: skip
    base = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():  # logits large enough that the cap matters
        base.lm_head.weight.mul_(40.0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
    ids = torch.randint(0, 128, (1, 12))
    labels = ids.clone()
    labels[0, :4] = -100
    batch = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(12)[None]}
    ours, n = summed_loss(model, batch)
    theirs = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(ours / n, theirs, rtol=1e-5, atol=1e-5)
