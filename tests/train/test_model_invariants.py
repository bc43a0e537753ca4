"""Invariants on a tiny random Llama: packed rows isolate examples, LoRA save/load and merge are exact."""

from pathlib import Path
from typing import Any

import pytest
import torch

from finetuneflow.models.chat import encode_text, pack
from finetuneflow.models.load import load_causal_lm, load_with_adapter
from finetuneflow.train.config import LoraSettings, TrainConfig
from finetuneflow.train.step import attach_lora


def _perturb_lora(model: Any) -> None:
    # fresh LoRA B matrices are zero; make the adapter actually change the outputs
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "ftf_eager"])  # auto: ftf_eager for short CPU rows
def test_packed_row_equals_each_example_alone(tiny_model: Path, tiny_tokenizer: Any, attention: str) -> None:
    from finetuneflow.train.attention import register

    register()
    model = load_causal_lm(tiny_model, attention=attention).eval()
    assert model.config._attn_implementation == attention
    model.train(attention == "ftf_eager")  # training: per-example blocks (eval: the matmul path)
    texts = ["The cover is open.", "Support is open Monday to Friday.", "Hello!"]
    exs = [encode_text(tiny_tokenizer, t, 64) for t in texts]
    (row,) = pack(exs, 64, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(
            input_ids=torch.tensor([row.input_ids]),
            position_ids=torch.tensor([row.position_ids]),
            attention_mask=None,
            use_cache=False,
        ).logits[0]
        offset = 0
        for ex in sorted(exs, key=lambda e: -len(e.input_ids)):  # the packing order
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            torch.testing.assert_close(
                packed[offset : offset + len(ex.input_ids)], alone, atol=1e-4, rtol=1e-4
            )
            offset += len(ex.input_ids)


def test_packing_without_position_resets_would_leak(tiny_model: Path, tiny_tokenizer: Any) -> None:
    """Control for the test above: with plain positions the second example sees the first."""
    model = load_causal_lm(tiny_model).eval()
    a, b = (encode_text(tiny_tokenizer, t, 64) for t in ("The cover is open.", "Hello there friend."))
    ids = torch.tensor([a.input_ids + b.input_ids])
    with torch.no_grad():
        joined = model(input_ids=ids).logits[0, len(a.input_ids) :]
        alone = model(input_ids=torch.tensor([b.input_ids])).logits[0]
    assert (joined - alone).abs().max() > 1e-3


@pytest.fixture
def adapter_dir(tiny_model: Path, tmp_path: Path) -> Path:
    model = attach_lora(load_causal_lm(tiny_model), TrainConfig(lora=LoraSettings(r=4, alpha=8)))
    _perturb_lora(model)
    model.save_pretrained(str(tmp_path / "adapter"))
    return tmp_path / "adapter"


def test_adapter_round_trips_through_plain_peft(tiny_model: Path, adapter_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 3]])
    ours = load_with_adapter(tiny_model, adapter_dir).eval()
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(adapter_dir)
    ).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, plain(input_ids=ids).logits)
        assert (plain(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-3


def test_merged_model_equals_adapter_model(tiny_model: Path, adapter_dir: Path) -> None:
    model = load_with_adapter(tiny_model, adapter_dir).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 7, 8]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)


def test_our_matmul_attention_matches_transformers_eager_in_values_and_gradients(tiny_model: Path) -> None:
    from finetuneflow.train.attention import register

    register()
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (2, 40))
    pos = torch.cat([torch.arange(25), torch.arange(15)]).repeat(2, 1)  # two packed examples per row
    pos[1] = torch.cat([torch.arange(7), torch.arange(30), torch.arange(3)])  # three in the second row
    results = []
    # eager with its dense mask; ours in eval mode (matmul path), ours training (per-example kernel)
    for attention, training in (("eager", False), ("ftf_eager", False), ("ftf_eager", True)):
        model = load_causal_lm(tiny_model, attention=attention).train(training)
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits  # no cache: packed mask
        logits.logsumexp(-1).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "self_attn" in n}
        results.append((logits.detach(), grads))
    (a, ga), *ours = results
    for b, gb in ours:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], atol=1e-5, rtol=1e-4)


def test_packed_blocks_are_where_positions_restart() -> None:
    from finetuneflow.train.attention import blocks

    assert blocks([0, 1, 2, 0, 1, 0, 0, 1]) == [(0, 3), (3, 5), (5, 6), (6, 8)]
    assert blocks([3, 4, 5]) == [(0, 3)]  # a row that starts mid-example is still one block


def test_lora_without_peft_input_casts_computes_the_same_under_autocast(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_model turns off peft's cast of a LoRA layer's input to fp32 under autocast, where
    autocast casts it back to bf16 for the matmul: the loss and adapter gradients must not move by a
    bit (with the default dropout 0; LoRA dropout would draw its masks on a bf16 tensor instead).
    peft's own forward is what runs where the fused layer does not apply (LoRA dropout, DoRA)."""
    from finetuneflow.models.loss import summed_loss
    from finetuneflow.train import model_setup
    from finetuneflow.train.model_setup import build_model

    monkeypatch.setattr(model_setup.lora_fused, "fuse", lambda model: 0)  # peft's path, not ours

    ids = torch.randint(0, 300, (2, 24))
    batch = {"input_ids": ids, "labels": ids, "position_ids": torch.arange(24).repeat(2, 1)}
    cfg = TrainConfig(base_model=str(tiny_model), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    results = []
    for casts in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_model, cfg, "cpu", torch.bfloat16).model.train()
        _perturb_lora(model)
        layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
        assert layers and all(not m.cast_input_dtype_enabled for m in layers)
        for m in layers:
            m.cast_input_dtype_enabled = casts
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = summed_loss(model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=0, rtol=0)


def test_our_training_attention_keeps_gemma3s_sliding_window(tmp_path: Path) -> None:
    """Gemma 3's local layers see only the last ``sliding_window`` tokens: with packed examples
    longer than that, ours (training) must give transformers' eager numbers, window included."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from finetuneflow.train.attention import register

    register()
    cfg = Gemma3TextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=8, max_position_embeddings=128,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma3ForCausalLM(cfg).save_pretrained(tmp_path / "gemma")
    ids = torch.randint(0, 300, (1, 40))
    pos = torch.cat([torch.arange(25), torch.arange(15)]).unsqueeze(0)  # both examples past the window
    out = []
    for attention, training in (("eager", False), ("ftf_eager", True)):
        model = load_causal_lm(tmp_path / "gemma", attention=attention).train(training)
        out.append(model(input_ids=ids, position_ids=pos, use_cache=False).logits.detach())
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-5)
