"""The merged model as GGUF files for llama.cpp / Ollama / LM Studio, written with the ``gguf``
package (no llama.cpp checkout), one file per type: ``<out>/gguf/model-<type>.gguf``.

Tensor names, q/k permutation and type rules follow llama.cpp's ``convert_hf_to_gguf.py``, so the
tensors are byte-identical to its output for F16 and Q8_0:

- llama-family weights store q and k with the rotary halves split (HF: ``[x_0..x_{d/2}, y_0..]``
  per head); llama.cpp rotates interleaved pairs, so q and k rows are permuted per head. transformers
  undoes exactly this on GGUF load. Qwen2 rotates halves in llama.cpp too and is not permuted.
- 1-D tensors (norms, biases) stay F32; a tensor whose rows are no multiple of the block size
  (32 for Q8_0/Q5/Q4) falls back to F16, and the result says which.
- K-quants (q4_k_m, ...) are llama.cpp's own quantizer applied to an F16 file we write.

Every file is then reloaded by an independent reader (transformers' GGUF loader, which dequantizes;
also llama.cpp when ``llama_cpp`` is installed) and checked against the trained model (verify.py).
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuneflow import paths
from finetuneflow.errors import ExportError
from finetuneflow.export.gguf_vocab import VocabMeta, stop_ids_in_file, tokenizer_metadata
from finetuneflow.export.step import GGUF_TYPES, K_QUANTS, Context

SUPPORTED = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
BY_MODEL_TYPE = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}  # configs without architectures
PERMUTED_ARCHES = {"llama"}  # convert_hf_to_gguf.py permutes q/k for LlamaModel, not for Qwen2Model
K_QUANT_HELP = (
    "K-quants are made by llama.cpp's quantizer, which is not installed. Get it with "
    "`pip install llama-cpp-python` (builds llama.cpp from source, ~15 min on 2 cores) or put a "
    "`llama-quantize` binary on PATH. Without it, choose q8_0, q5_1, q5_0, q4_1 or q4_0."
)
# HF parameter name -> llama.cpp tensor name ({n} = block index)
NAMES = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", "blk.{n}.attn_q.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", "blk.{n}.attn_k.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", "blk.{n}.attn_v.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)", "blk.{n}.attn_output.{p}"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.(weight)", "blk.{n}.ffn_gate.{p}"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.(weight)", "blk.{n}.ffn_up.{p}"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.(weight)", "blk.{n}.ffn_down.{p}"),
    (r"model\.layers\.(\d+)\.input_layernorm\.(weight)", "blk.{n}.attn_norm.{p}"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.(weight)", "blk.{n}.ffn_norm.{p}"),
]


@dataclass
class ModelSpec:
    """What the GGUF header says about the network (llama.cpp's ``<arch>.*`` keys)."""

    arch: str
    name: str
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any]
    vocab_size: int
    tied: bool


def model_spec(config: Any, name: str = "") -> ModelSpec:
    """Read the GGUF header values from a transformers config.

    Raises:
        ExportError: not a llama-family architecture.
    """
    archs: list[str] = list(getattr(config, "architectures", None) or [])
    arch = next((SUPPORTED[a] for a in archs if a in SUPPORTED), None)
    if not archs:
        arch = BY_MODEL_TYPE.get(getattr(config, "model_type", ""))
    if arch is None:
        raise ExportError(
            f"GGUF export supports {', '.join(sorted(SUPPORTED))} (SmolLM is Llama); "
            f"this model is {archs or [getattr(config, 'model_type', 'unknown')]}"
        )
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = float(rope.pop("rope_theta", getattr(config, "rope_theta", 10000.0)))
    heads = int(config.num_attention_heads)
    return ModelSpec(
        arch=arch,
        name=name or str(getattr(config, "_name_or_path", "") or "finetuned").split("/")[-1],
        context_length=int(config.max_position_embeddings),
        embedding_length=int(config.hidden_size),
        block_count=int(config.num_hidden_layers),
        feed_forward_length=int(config.intermediate_size),
        head_count=heads,
        head_count_kv=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        rms_eps=float(config.rms_norm_eps),
        rope_theta=theta,
        rope_scaling={} if rope.get("rope_type", rope.get("type", "default")) == "default" else rope,
        vocab_size=int(config.vocab_size),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: per head, rows [a_0..a_{d/2}, b_0..] become
    [a_0, b_0, a_1, b_1, ...]. ``w``: (heads * head_dim, hidden) weight or (heads * head_dim,) bias."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: Any, spec: ModelSpec) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight, q/k permuted where llama.cpp expects it.

    Raises:
        ExportError: a weight with no llama.cpp counterpart (the file would be silently incomplete).
    """
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and spec.tied:
            continue  # tied: llama.cpp reuses token_embd
        name = _gguf_name(hf_name)
        data = tensor.detach().to("cpu").float().numpy()
        if spec.arch in PERMUTED_ARCHES and ".attn_q." in name:
            data = permute(data, spec.head_count, spec.head_count)
        elif spec.arch in PERMUTED_ARCHES and ".attn_k." in name:
            data = permute(data, spec.head_count, spec.head_count_kv)
        yield name, data
    if spec.rope_scaling.get("rope_type") == "llama3":
        yield "rope_freqs.weight", _llama3_rope_factors(spec)


def _gguf_name(hf_name: str) -> str:
    for pattern, target in NAMES:
        m = re.fullmatch(pattern, hf_name)
        if m:
            return target.format(n=m.group(1), p=m.group(2)) if m.groups() else target
    raise ExportError(f"weight {hf_name!r} has no GGUF counterpart; refusing to write an incomplete file")


def _llama3_rope_factors(spec: ModelSpec) -> np.ndarray:
    # as convert_hf_to_gguf.py: Llama 3.1+ stretch low frequencies; llama.cpp reads the factors
    r = spec.rope_scaling
    factor, low, high = r.get("factor", 8.0), r.get("low_freq_factor", 1.0), r.get("high_freq_factor", 4.0)
    old = r.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / spec.rope_theta ** (np.arange(0, spec.head_dim, 2, dtype=np.float32) / spec.head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def write_gguf(
    path: Path, spec: ModelSpec, tensors: list[tuple[str, np.ndarray]], vocab: VocabMeta, kind: str
) -> list[str]:
    """Write one GGUF file of type ``kind`` (atomically); returns the tensors that fell back to
    another type, in words."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind.upper()]
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, spec.arch)
    _write_header(writer, spec, kind)
    vocab.write(writer)
    fallbacks = []
    for name, data in tensors:
        want = qtype if data.ndim > 1 and not name.endswith("_norm.weight") else gguf.GGMLQuantizationType.F32
        block = gguf.GGML_QUANT_SIZES[want][0]
        if data.shape[-1] % block:  # llama.cpp's converter falls back the same way
            fallbacks.append(f"{name}: rows of {data.shape[-1]} are not a multiple of {block}; F16")
            want = gguf.GGMLQuantizationType.F16
        writer.add_tensor(name, gguf.quants.quantize(data, want), raw_dtype=want)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return fallbacks


def _write_header(writer: Any, spec: ModelSpec, kind: str) -> None:
    import gguf

    writer.add_type("model")
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.embedding_length)
    writer.add_block_count(spec.block_count)
    writer.add_feed_forward_length(spec.feed_forward_length)
    writer.add_head_count(spec.head_count)
    writer.add_head_count_kv(spec.head_count_kv)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_rope_dimension_count(spec.head_dim)
    if spec.head_dim != spec.embedding_length // spec.head_count:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    writer.add_vocab_size(spec.vocab_size)
    rope_type = spec.rope_scaling.get("rope_type", spec.rope_scaling.get("type"))
    if rope_type in ("linear", "yarn") and "factor" in spec.rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_type))
        writer.add_rope_scaling_factor(float(spec.rope_scaling["factor"]))
        if rope_type == "yarn" and "original_max_position_embeddings" in spec.rope_scaling:
            writer.add_rope_scaling_orig_ctx_len(int(spec.rope_scaling["original_max_position_embeddings"]))
    file_type = "ALL_F32" if kind == "f32" else f"MOSTLY_{kind.upper()}"
    writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def k_quantizer() -> Callable[[Path, Path, str], None]:
    """llama.cpp's quantizer (the llama_cpp package, else a llama-quantize binary on PATH).

    Raises:
        ExportError: neither is available; the message says how to get one.
    """
    try:
        import llama_cpp
    except ImportError:
        binary = shutil.which("llama-quantize")
        if binary is None:
            raise ExportError(K_QUANT_HELP) from None

        def run_binary(src: Path, dst: Path, kind: str) -> None:
            done = subprocess.run([binary, str(src), str(dst), kind.upper()], capture_output=True, text=True)
            if done.returncode != 0:
                raise ExportError(f"llama-quantize {kind} failed: {done.stderr[-500:]}")

        return run_binary

    def run_library(src: Path, dst: Path, kind: str) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
        if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
            raise ExportError(f"llama.cpp could not quantize {src.name} to {kind}")

    return run_library


def source_gguf(run_dir: Path) -> Path | None:
    """The GGUF file the run's base model was converted from, if any (``ftf_source.json``)."""
    from finetuneflow.models.convert import SOURCE_FILE
    from finetuneflow.state import runs as rf

    config = run_dir / rf.CONFIG
    if not config.is_file():
        return None
    record = Path(json.loads(config.read_text()).get("model_dir", "")) / SOURCE_FILE
    if not record.is_file():
        return None
    path = Path(json.loads(record.read_text()).get("path", ""))
    return path if path.suffix == ".gguf" and path.is_file() else None


def export_gguf(ctx: Context) -> dict[str, Any]:
    """The merged model as one GGUF file per ``ctx.cfg.gguf_types``, each verified.

    Raises:
        ExportError: unsupported architecture or type, a K-quant without llama.cpp.
        VerificationError: a file does not reproduce the trained model.
    """
    kinds = [k.lower() for k in ctx.cfg.gguf_types]
    unknown = [k for k in kinds if k not in GGUF_TYPES + K_QUANTS]
    if unknown:
        raise ExportError(f"unknown GGUF types {unknown}; choose from {', '.join(GGUF_TYPES + K_QUANTS)}")
    quantize = k_quantizer() if any(k in K_QUANTS for k in kinds) else None  # fail before any work
    model, tokenizer = ctx.merged()
    spec = model_spec(model.config)
    source = source_gguf(ctx.run_dir)
    vocab = tokenizer_metadata(tokenizer, spec.vocab_size, source)
    tensors = list(gguf_tensors(model, spec))
    folder = ctx.out_dir / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        ctx.emit("gguf", i, len(kinds), message=f"writing GGUF {kind}")
        path = folder / f"model-{kind}.gguf"
        start = time.perf_counter()
        if kind in K_QUANTS:
            assert quantize is not None
            fallbacks = _write_k_quant(path, spec, tensors, vocab, kind, quantize)
        else:
            fallbacks = write_gguf(path, spec, tensors, vocab, kind)
        entry: dict[str, Any] = {
            "path": str(path), "bytes": path.stat().st_size, "sha256": paths.sha256_file(path),
            "seconds": round(time.perf_counter() - start, 3), "fallbacks": fallbacks,
        }  # fmt: skip
        if ctx.cfg.verify:
            entry |= verify_gguf(path, kind, ctx.reference())
        files[kind] = entry
    return {"path": str(folder), "arch": spec.arch, "tokenizer": vocab.origin, "eot_id": vocab.eot_id,
            "notes": vocab.notes, "files": files}  # fmt: skip


def _write_k_quant(
    path: Path, spec: ModelSpec, tensors: list[tuple[str, np.ndarray]], vocab: VocabMeta, kind: str,
    quantize: Callable[[Path, Path, str], None],
) -> list[str]:  # fmt: skip
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        f16 = Path(tmp) / "model-f16.gguf"
        fallbacks = write_gguf(f16, spec, tensors, vocab, "f16")
        quantize(f16, path.with_name(path.name + ".tmp"), kind)
        path.with_name(path.name + ".tmp").replace(path)
    return fallbacks


def verify_gguf(path: Path, kind: str, ref: Any) -> dict[str, Any]:
    """Reload ``path`` with transformers (and llama.cpp when installed) and check it against the
    trained model's reference answers; returns {"verify": ..., "verify_llama_cpp": ...}.

    Raises:
        VerificationError: a reader's logits or stops do not match.
    """
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from finetuneflow.export import verify

    stops = stop_ids_in_file(gguf.GGUFReader(path))
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    verdict = verify.check(ref, verify.torch_logits_fn(reloaded.eval()), kind, stops)
    out = {"verify": verify.require(verdict, f"GGUF {kind} (transformers reader)"), "stop_ids": sorted(stops)}
    del reloaded
    llama_fn = llama_cpp_logits_fn(path)
    if llama_fn is not None:
        # llama.cpp keeps its KV cache in F16, so even an F32 file is held to the F16 limits there
        limits = "f16" if kind == "f32" else kind
        verdict = verify.check(ref, llama_fn, limits, stops)
        out["verify_llama_cpp"] = verify.require(verdict, f"GGUF {kind} (llama.cpp)")
    return out


def llama_cpp_logits_fn(path: Path) -> Callable[[list[int]], np.ndarray] | None:
    """A LogitsFn running the file in llama.cpp, or None when ``llama_cpp`` is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), logits_all=True, n_ctx=512, n_threads=1, verbose=False)

    def run(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)

    return run
