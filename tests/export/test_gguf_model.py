"""GGUF export of the merged model: round trips through transformers' GGUF reader, metadata, stops."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from finetuneflow import paths
from finetuneflow.errors import ExportError, VerificationError
from finetuneflow.events import Emitter
from finetuneflow.export import gguf_model as gm
from finetuneflow.export.gguf_vocab import stop_ids_in_file, tokenizer_metadata
from finetuneflow.export.step import Context, ExportConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(trained_run: Path) -> tuple[Path, dict[str, Any]]:
    """The shared tiny run, and a context cache shared by this module's tests (merge + reference once)."""
    return trained_run, {}


def _ctx(run: tuple[Path, dict[str, Any]], out: Path, types: list[str], **kw: Any) -> Context:
    cfg = ExportConfig(formats=["gguf"], gguf_types=types, **kw)
    return Context(run[0], out, cfg, Emitter("export", None), {}, _cache=run[1])


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


def test_f32_f16_q8_0_round_trip_through_transformers(run: Any, tmp_path: Path) -> None:
    result = gm.export_gguf(_ctx(run, tmp_path, ["f32", "f16", "q8_0"]))
    files = result["files"]
    assert files["f32"]["verify"]["max_abs_diff"] <= 1e-3
    assert files["f16"]["verify"]["max_abs_diff"] <= 0.1
    assert files["q8_0"]["verify"]["passed"] and files["q8_0"]["verify"]["top1_agreement"] >= 0.9
    for kind, entry in files.items():
        path = Path(entry["path"])
        assert path == tmp_path / "gguf" / f"model-{kind}.gguf" and path.stat().st_size == entry["bytes"]
        assert entry["sha256"] == paths.sha256_file(path)
        assert entry["fallbacks"] == [] and entry["seconds"] >= 0  # reported (bench/export.py prints it)
    assert files["q8_0"]["bytes"] < files["f16"]["bytes"] < files["f32"]["bytes"]
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(files["q8_0"]["path"]).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied embeddings


def test_metadata_keys_stops_and_chat_template(run: Any, tmp_path: Path) -> None:
    result = gm.export_gguf(_ctx(run, tmp_path, ["q8_0"], verify=False))
    reader = gguf.GGUFReader(result["files"]["q8_0"]["path"])
    _, tokenizer = _ctx(run, tmp_path, []).merged()
    keys = ["context_length", "embedding_length", "block_count", "feed_forward_length",
            "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
            "rope.freq_base", "rope.dimension_count", "vocab_size"]  # fmt: skip
    assert _field(reader, "general.architecture") == "llama" and _field(reader, "general.name")
    assert all(f"llama.{k}" in reader.fields for k in keys)
    assert (
        _field(reader, "llama.attention.head_count_kv") == 2
        and _field(reader, "llama.rope.dimension_count") == 16
    )
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (
        _field(reader, "tokenizer.ggml.eos_token_id")
        == im_end
        == _field(reader, "tokenizer.ggml.eot_token_id")
    )
    assert _field(reader, "tokenizer.chat_template") == tokenizer.chat_template
    assert (
        _field(reader, "tokenizer.ggml.model") == "gpt2" and _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert tokens == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0
    assert _field(reader, "tokenizer.ggml.token_type")[im_end] == gguf.TokenType.CONTROL
    assert im_end in stop_ids_in_file(reader)


def test_permutation_is_what_transformers_undoes() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    undo = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    q, k = np.random.rand(64, 64).astype(np.float32), np.random.rand(32, 64).astype(np.float32)
    pq, pk = gm.permute(q, 4, 4), gm.permute(k, 4, 2)
    assert not np.array_equal(pq, q)
    assert np.array_equal(undo.process(pq, "blk.0.attn_q.weight").weights, q)
    assert np.array_equal(undo.process(pk, "blk.0.attn_k.weight").weights, k)
    # per head, rotary halves [a.., b..] become interleaved pairs [a0, b0, a1, b1, ...]
    assert np.array_equal(gm.permute(np.arange(8.0), 1)[:4], [0.0, 4.0, 1.0, 5.0])


def _write_and_reload(model: Any, tokenizer: Any, folder: Path, kind: str) -> tuple[Any, list[str]]:
    from transformers import AutoModelForCausalLM

    spec = gm.model_spec(model.config)
    vocab = tokenizer_metadata(tokenizer, spec.vocab_size, None)
    fallbacks = gm.write_gguf(
        folder / f"m-{kind}.gguf", spec, list(gm.gguf_tensors(model, spec)), vocab, kind
    )
    loaded = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=f"m-{kind}.gguf", dtype=torch.float32
    )
    return loaded.eval(), fallbacks


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_qwen2_with_biases_and_mistral_round_trip(arch: str, tiny_tokenizer: Any, tmp_path: Path) -> None:
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = (
        (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (MistralConfig, MistralForCausalLM)
    )
    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    cfg = config_cls(
        vocab_size=len(tiny_tokenizer), num_key_value_heads=2, tie_word_embeddings=False, **sizes
    )
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    if arch == "qwen2":
        for layer in model.model.layers:  # random biases, so a dropped or permuted bias shows
            torch.nn.init.normal_(layer.self_attn.q_proj.bias, std=0.5)
            torch.nn.init.normal_(layer.self_attn.k_proj.bias, std=0.5)
    loaded, _ = _write_and_reload(model, tiny_tokenizer, tmp_path, "f32")
    ids = torch.tensor([[3, 50, 120, 7, 300, 2, 9, 11]])
    with torch.no_grad():
        assert float((loaded(ids).logits - model(ids).logits).abs().max()) <= 1e-4
    reader = gguf.GGUFReader(tmp_path / "m-f32.gguf")
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names and ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    assert _field(reader, "general.architecture") == ("qwen2" if arch == "qwen2" else "llama")


def test_rows_not_a_multiple_of_the_block_fall_back_to_f16(tiny_tokenizer: Any, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4)
    cfg = LlamaConfig(
        vocab_size=len(tiny_tokenizer), num_key_value_heads=2, tie_word_embeddings=True, **sizes
    )
    loaded, fallbacks = _write_and_reload(LlamaForCausalLM(cfg).eval(), tiny_tokenizer, tmp_path, "q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "m-q8_0.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"
    assert any("blk.0.attn_q.weight" in f and "F16" in f for f in fallbacks)


def test_tokenizer_keys_are_copied_from_a_source_gguf(
    tiny_model: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    _write_and_reload(model, tiny_tokenizer, tmp_path, "f16")
    source = tmp_path / "m-f16.gguf"
    meta = tokenizer_metadata(tiny_tokenizer, len(tiny_tokenizer), source)
    assert meta.origin == f"copied from {source}" and "tokenizer.ggml.merges" in meta.fields
    other = tokenizer_metadata(tiny_tokenizer, len(tiny_tokenizer) + 8, source)  # a resized vocabulary
    assert other.origin.startswith("built from") and "embedding rows" in other.notes[0]


def test_unsupported_architecture_is_refused_by_name() -> None:
    from transformers import GPT2Config

    cfg = GPT2Config()
    cfg.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(
        ExportError, match="LlamaForCausalLM.*MistralForCausalLM.*Qwen2ForCausalLM.*GPT2LMHeadModel"
    ):
        gm.model_spec(cfg)


def test_k_quant_without_llama_cpp_says_how_to_get_it(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails even where it is installed
    monkeypatch.setattr(gm.shutil, "which", lambda _name: None)
    with pytest.raises(ExportError, match=r"pip install llama-cpp-python.*q8_0"):
        gm.export_gguf(_ctx(run, tmp_path, ["q8_0", "q4_k_m"]))
    assert not (tmp_path / "gguf").exists()  # refused before any work


def test_a_broken_writer_fails_verification(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gm, "permute", lambda w, *_args: w)  # forget llama.cpp's q/k order
    with pytest.raises(VerificationError, match="f32"):
        gm.export_gguf(_ctx(run, tmp_path, ["f32"]))


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_runs_the_file(run: Any, tmp_path: Path) -> None:
    entry = gm.export_gguf(_ctx(run, tmp_path, ["q8_0"]))["files"]["q8_0"]
    assert entry["verify_llama_cpp"]["passed"]


@pytest.mark.slow
def test_default_model_q8_0_keeps_the_source_tokenizer(default_model: Path, tmp_path: Path) -> None:
    import json

    from finetuneflow.models.load import load_causal_lm, load_tokenizer
    from finetuneflow.models.resolve import default_gguf

    base = default_model
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model_dir": str(base)}))
    cache = {"merged": (load_causal_lm(base).eval(), load_tokenizer(base))}  # the base stands in for a merge
    result = gm.export_gguf(_ctx((run_dir, cache), tmp_path, ["q8_0"]))
    entry = result["files"]["q8_0"]
    assert result["tokenizer"] == f"copied from {default_gguf()}"
    assert entry["verify"]["top1_agreement"] >= 0.9
    ours, source = gguf.GGUFReader(entry["path"]), gguf.GGUFReader(default_gguf())
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.model",
    ):
        assert _field(ours, key) == _field(source, key)
    assert _field(ours, "tokenizer.ggml.eos_token_id") == 2 == _field(ours, "tokenizer.ggml.eot_token_id")
