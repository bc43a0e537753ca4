"""GGUF LoRA adapter: llama.cpp's layout, the q/k permutation of B, rsLoRA alpha, refusals, and the
independent read-back (gguf reader + plain transformers) against the trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from finetuneflow.errors import ExportError, VerificationError
from finetuneflow.events import Emitter
from finetuneflow.export import gguf_lora as gl
from finetuneflow.export import gguf_model as gm
from finetuneflow.export.step import Context, ExportConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(trained_run: Path) -> Path:
    return trained_run


def _variant(trained: Path, tmp: Path, b_scale: float | None = None, **config: Any) -> Path:
    """A copy of the run with B scaled (0 = an untrained adapter) and/or adapter_config changes."""
    run = tmp / "run"
    shutil.copytree(trained, run)
    adapter = run / "adapter"
    if b_scale is not None:
        weights = load_file(str(adapter / "adapter_model.safetensors"))
        weights = {k: v * b_scale if ".lora_B." in k else v for k, v in weights.items()}
        save_file(weights, str(adapter / "adapter_model.safetensors"))
    if config:
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps(cfg | config))
    return run


def _ctx(run: Path, out: Path, kind: str = "f16", verify: bool = True) -> Context:
    cfg = ExportConfig(formats=["gguf-lora"], gguf_lora_type=kind, verify=verify)
    return Context(run, out, cfg, Emitter("export", None), {})


def test_layout_metadata_names_and_shapes(trained: Path, tmp_path: Path) -> None:
    result = gl.export_gguf_lora(_ctx(trained, tmp_path))
    path = Path(result["path"])
    assert path == tmp_path / "gguf" / "adapter-f16.gguf" and result["verify"]["passed"]
    assert result["verify"]["max_abs_diff"] <= 0.1 and result["verify_llama_cpp"].startswith("skipped")
    reader = gguf.GGUFReader(str(path))
    field = {k: reader.fields[k].contents() for k in reader.fields if not k.startswith("GGUF.")}
    assert field["general.type"] == "adapter" and field["adapter.type"] == "lora"
    assert field["general.architecture"] == "llama" and field["adapter.lora.alpha"] == 32.0
    cfg = json.loads((trained / "adapter" / "adapter_config.json").read_text())
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2 == result["tensors"]  # 7 linear weights x 2 layers, A and B each
    q_a, q_b = tensors["blk.0.attn_q.weight.lora_a"], tensors["blk.0.attn_q.weight.lora_b"]
    # ggml order (ne): A is (in, r), B is (r, out), which is what llama.cpp checks against the base
    assert list(q_a.shape) == [64, cfg["r"]] and list(q_b.shape) == [cfg["r"], 64]
    assert list(tensors["blk.1.ffn_down.weight.lora_a"].shape) == [128, cfg["r"]]
    assert list(tensors["blk.1.attn_k.weight.lora_b"].shape) == [cfg["r"], 32]  # 2 kv heads x 16
    assert {t.tensor_type.name for t in reader.tensors} == {"F16"}


def test_b_is_permuted_for_q_and_k_only(trained: Path, tmp_path: Path) -> None:
    result = gl.export_gguf_lora(_ctx(trained, tmp_path, "f32"))
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(result["path"]).tensors}
    peft = load_file(str(trained / "adapter" / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.{}.lora_{}.weight"
    q_b, k_b = peft[key.format("self_attn.q_proj", "B")], peft[key.format("self_attn.k_proj", "B")]
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_b"], gm.permute(q_b, 4, 4))
    np.testing.assert_array_equal(tensors["blk.0.attn_k.weight.lora_b"], gm.permute(k_b, 4, 2))
    assert not np.array_equal(tensors["blk.0.attn_q.weight.lora_b"], q_b)
    np.testing.assert_array_equal(
        tensors["blk.0.attn_v.weight.lora_b"], peft[key.format("self_attn.v_proj", "B")]
    )
    np.testing.assert_array_equal(
        tensors["blk.0.attn_q.weight.lora_a"], peft[key.format("self_attn.q_proj", "A")]
    )
    assert result["verify"]["max_abs_diff"] <= 1e-3


def test_wrong_permutation_fails_verification(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _variant(trained, tmp_path, b_scale=30.0)  # a strong adapter: its q/k rows matter
    assert gl.export_gguf_lora(_ctx(run, tmp_path / "ok", "f32"))["verify"]["passed"]
    monkeypatch.setattr(gl, "permute", lambda w, *_: w)  # forget the q/k permutation
    with pytest.raises(VerificationError, match="failed verification"):
        gl.export_gguf_lora(_ctx(run, tmp_path / "bad", "f32"))


def test_zero_b_adapter_gives_exactly_the_base_logits(trained: Path, tmp_path: Path) -> None:
    run = _variant(trained, tmp_path, b_scale=0.0)
    result = gl.export_gguf_lora(_ctx(run, tmp_path / "out"))
    assert result["verify"]["max_abs_diff"] == 0.0 and result["verify"]["top1_agreement"] == 1.0


def test_rslora_alpha_is_folded_so_llama_cpp_scale_matches() -> None:
    plain = {"r": 16, "lora_alpha": 32}
    assert gl.llama_cpp_alpha(plain) == 32.0  # llama.cpp: 32 / 16 = PEFT's 2.0
    rs = gl.llama_cpp_alpha(plain | {"use_rslora": True})
    assert rs / 16 == pytest.approx(32 / 16**0.5) and rs == pytest.approx(128.0)


def test_rslora_run_verifies(trained: Path, tmp_path: Path) -> None:
    run = _variant(trained, tmp_path, use_rslora=True)  # same tensors, scale alpha / sqrt(r)
    result = gl.export_gguf_lora(_ctx(run, tmp_path / "out", "f32"))
    assert result["alpha"] == pytest.approx(32 * 16**0.5) and result["verify"]["max_abs_diff"] <= 1e-3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"rank_pattern": {"q_proj": 4}}, "per-module ranks"),
    ],
)
def test_refused_adapter_kinds(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ExportError, match=message):
        gl.llama_cpp_alpha({"r": 8, "lora_alpha": 16} | config)


def test_embedding_lora_refused(trained: Path, tmp_path: Path) -> None:
    run = _variant(trained, tmp_path)
    path = run / "adapter" / "adapter_model.safetensors"
    weights = load_file(str(path))
    weights["base_model.model.model.embed_tokens.lora_embedding_A"] = np.zeros((4, 8), np.float32)
    save_file(weights, str(path))
    with pytest.raises(ExportError, match="embeddings or LM head"):
        gl.export_gguf_lora(_ctx(run, tmp_path / "out"))


def test_dora_run_refused_before_writing(trained: Path, tmp_path: Path) -> None:
    run = _variant(trained, tmp_path, use_dora=True)
    with pytest.raises(ExportError, match="DoRA"):
        gl.export_gguf_lora(_ctx(run, tmp_path / "out"))
    assert not (tmp_path / "out" / "gguf").exists()


def test_bf16_adapter_reads_back_close_to_the_trained_deltas(trained: Path, tmp_path: Path) -> None:
    # not through verify.check: the random tiny model has near-tied logits, and bf16 rounding flips a
    # greedy token a dozen steps in (max logit diff ~2e-3); the deltas themselves are compared here
    from finetuneflow.models.load import load_causal_lm, load_tuned

    result = gl.export_gguf_lora(_ctx(trained, tmp_path, "bf16", verify=False))
    assert {t.tensor_type.name for t in gguf.GGUFReader(result["path"]).tensors} == {"BF16"}
    base_dir = Path(json.loads((trained / "config.json").read_text())["model_dir"])
    deltas, header = gl.read_deltas(Path(result["path"]), load_causal_lm(base_dir))
    merged = dict(load_tuned(trained).model.merge_and_unload().named_parameters())
    base = dict(load_causal_lm(base_dir).named_parameters())
    assert header["general.architecture"] == "llama" and len(deltas) == 14
    for name, delta in deltas.items():
        want = merged[name] - base[name]
        assert float((delta - want).abs().max()) <= 0.01 * float(want.abs().max()) + 1e-6
