"""The LoRA adapter as a GGUF file for llama.cpp (``--lora``) and Ollama (``ADAPTER``):
``<out>/gguf/adapter-<type>.gguf``.

The layout is llama.cpp's ``convert_lora_to_gguf.py``: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, the base model's ``general.architecture``, and per
adapted weight two tensors ``<llama.cpp name>.lora_a`` (PEFT's A, shape (r, in)) and ``.lora_b``
(PEFT's B, shape (out, r)). llama.cpp computes ``W x + (alpha / r) B A x`` with ``r`` read from A,
so:

- q/k rows of B are permuted like the base GGUF's q/k weights (``gguf_model.permute``): the delta
  B A then lands on the rows llama.cpp holds; A (the input side) is untouched.
- rsLoRA trains with scale ``alpha / sqrt(r)``; llama.cpp divides by ``r``, so we write
  ``alpha' = scale * r`` (= ``alpha * sqrt(r)``), which gives back the trained scale.
- DoRA (a learned magnitude per output), ``modules_to_save`` (whole trained copies), embedding
  LoRA and per-module ranks or alphas have no llama.cpp form and are refused.

Verification reads the file back with ``gguf.GGUFReader`` (not our writer), undoes the q/k
permutation with transformers' own GGUF un-permute, adds ``(alpha / r) B A`` to the base weights
loaded with plain transformers, and compares that model with the trained one (verify.py); with
``llama_cpp`` installed and a base GGUF on disk, llama.cpp runs the adapter on the base as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from finetuneflow import paths
from finetuneflow.errors import ExportError
from finetuneflow.export.gguf_model import NAMES, PERMUTED_ARCHES, ModelSpec, model_spec, permute
from finetuneflow.export.step import Context, stop_ids
from finetuneflow.state import runs as rf

LORA_TYPES = ("f32", "f16", "bf16")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def export_gguf_lora(ctx: Context) -> dict[str, Any]:
    """Write and verify ``<out>/gguf/adapter-<type>.gguf``.

    Raises:
        ExportError: no adapter (full fine-tuning), DoRA, modules_to_save, embedding LoRA,
            per-module ranks/alphas, an unsupported architecture or tensor type.
        VerificationError: the file read back does not reproduce the trained model.
    """
    kind = ctx.cfg.gguf_lora_type
    if kind not in LORA_TYPES:
        raise ExportError(f"gguf_lora_type {kind!r}: choose f32, f16 or bf16")
    adapter_dir = ctx.run_dir / rf.ADAPTER
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{ctx.run_dir} has no LoRA adapter (full fine-tuning?); export 'gguf' instead")
    base_dir = Path(rf.read_json(ctx.run_dir / rf.CONFIG)["model_dir"])
    spec = model_spec(_base_config(base_dir))
    lora_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    alpha = llama_cpp_alpha(lora_cfg)
    tensors = adapter_tensors(adapter_dir, spec)
    path = ctx.out_dir / "gguf" / f"adapter-{kind}.gguf"
    write_adapter(path, spec, alpha, tensors, kind)
    result: dict[str, Any] = {
        "path": str(path), "type": kind, "arch": spec.arch, "alpha": alpha, "rank": int(lora_cfg["r"]),
        "rslora": bool(lora_cfg.get("use_rslora")), "tensors": len(tensors),
        "bytes": path.stat().st_size, "sha256": paths.sha256_file(path),
    }  # fmt: skip
    if ctx.cfg.verify:
        result |= verify_adapter(ctx, path, base_dir, kind)
    return result


def _base_config(base_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(base_dir), trust_remote_code=False)


def llama_cpp_alpha(lora_cfg: dict[str, Any]) -> float:
    """The ``adapter.lora.alpha`` that makes llama.cpp's ``alpha / r`` equal the trained scale.

    Raises:
        ExportError: DoRA, modules_to_save, or per-module ranks/alphas (one alpha per file).
    """
    if lora_cfg.get("use_dora"):
        raise ExportError(
            "this adapter is DoRA (a learned magnitude per output weight); llama.cpp and Ollama apply "
            "plain LoRA only. Export 'gguf' (the merged model, DoRA folded in) instead"
        )
    if lora_cfg.get("modules_to_save"):
        raise ExportError(
            f"the adapter trains whole modules ({lora_cfg['modules_to_save']}, modules_to_save); a GGUF "
            "LoRA can only carry A/B pairs. Export 'gguf' (the merged model) instead"
        )
    if lora_cfg.get("rank_pattern") or lora_cfg.get("alpha_pattern"):
        raise ExportError(
            "the adapter has per-module ranks or alphas (rank_pattern/alpha_pattern); a GGUF LoRA has "
            "one alpha. Export 'gguf' (the merged model) instead"
        )
    r, alpha = int(lora_cfg["r"]), float(lora_cfg["lora_alpha"])
    scale = alpha / r**0.5 if lora_cfg.get("use_rslora") else alpha / r
    return scale * r  # rsLoRA: alpha * sqrt(r)


def adapter_tensors(adapter_dir: Path, spec: ModelSpec) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp tensor name, float32 array) pairs, ``.lora_a`` then ``.lora_b`` per weight.

    Raises:
        ExportError: embedding/lm_head LoRA, DoRA magnitudes, trained copies, unmapped modules.
    """
    from safetensors.numpy import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        if "lora_embedding" in key or "embed_tokens" in key or "lm_head" in key:
            raise ExportError(
                f"the adapter changes the embeddings or LM head ({key}); llama.cpp cannot apply that "
                "as a LoRA. Export 'gguf' (the merged model) instead"
            )
        match = _KEY.match(key)
        if match is None:
            what = "a DoRA magnitude" if "magnitude" in key else "not a LoRA A/B weight"
            raise ExportError(f"adapter tensor {key} is {what}; a GGUF LoRA holds A/B pairs only")
        pairs.setdefault(match["module"], {})[match["ab"]] = value.astype(np.float32)
    out: list[tuple[str, np.ndarray]] = []
    for module, ab in sorted(pairs.items(), key=lambda kv: _natural(kv[0])):
        name = gguf_weight_name(module + ".weight")
        b = ab["B"]  # (out, r): its rows are the output rows the base GGUF permuted
        if spec.arch in PERMUTED_ARCHES and ".attn_q." in name:
            b = permute(b, spec.head_count, spec.head_count)
        elif spec.arch in PERMUTED_ARCHES and ".attn_k." in name:
            b = permute(b, spec.head_count, spec.head_count_kv)
        out += [(name + ".lora_a", ab["A"]), (name + ".lora_b", np.ascontiguousarray(b))]
    return out


def _natural(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def gguf_weight_name(hf_name: str) -> str:
    """llama.cpp's name for an HF weight (the table gguf_model.py writes the base with).

    Raises:
        ExportError: the weight has no llama.cpp counterpart.
    """
    for pattern, target in NAMES:
        m = re.fullmatch(pattern, hf_name)
        if m:
            return target.format(n=m.group(1), p=m.group(2)) if m.groups() else target
    raise ExportError(f"adapted weight {hf_name!r} has no llama.cpp counterpart; cannot write a GGUF LoRA")


def write_adapter(path: Path, spec: ModelSpec, alpha: float, tensors: list[tuple[str, np.ndarray]],
                  kind: str) -> None:  # fmt: skip
    """Write the adapter file (atomically: a temporary name, then renamed)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), spec.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(f"{spec.name} LoRA")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16}[kind]  # fmt: skip
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, data in tensors:
        if kind == "f16":
            writer.add_tensor(name, data.astype(np.float16))
        elif kind == "bf16":
            raw = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)


def read_deltas(path: Path, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an adapter file independently of the writer: ({hf parameter: delta W}, header).

    The GGUF names are mapped back with transformers' own GGUF name map, and B's rows un-permuted
    with the processor transformers applies to base GGUF weights; delta = (alpha / r) B A.

    Raises:
        ExportError: not a LoRA adapter file, a tensor without its pair or counterpart.
    """
    import gguf
    import torch
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    reader = gguf.GGUFReader(str(path))
    header = {k: reader.fields[k].contents() for k in ("general.type", "general.architecture",
              "adapter.type", "adapter.lora.alpha") if k in reader.fields}  # fmt: skip
    if header.get("general.type") != "adapter" or header.get("adapter.type") != "lora":
        raise ExportError(f"{path.name} is not a GGUF LoRA adapter (header {header})")
    arch = str(header["general.architecture"])
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    arrays = {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in reader.tensors
    }
    alpha = float(header["adapter.lora.alpha"])
    deltas = {}
    for name, a in arrays.items():
        if not name.endswith(".lora_a"):
            continue
        base = name.removesuffix(".lora_a")
        if base + ".lora_b" not in arrays or base not in names:
            raise ExportError(f"{path.name}: {name} has no lora_b or no weight in the base model")
        b = processor.process(weights=arrays[base + ".lora_b"], name=base).weights
        deltas[names[base]] = torch.from_numpy((alpha / a.shape[0]) * (b @ a))
    return deltas, header


def verify_adapter(ctx: Context, path: Path, base_dir: Path, kind: str) -> dict[str, Any]:
    """Base (plain transformers) + the file's deltas vs the trained model; llama.cpp too if present.

    Raises:
        VerificationError: logits or stops differ beyond the limits for ``kind``.
    """
    import torch

    from finetuneflow.export import verify
    from finetuneflow.models.load import load_causal_lm, load_tokenizer

    ref = ctx.reference()
    model = load_causal_lm(base_dir).eval()
    deltas, header = read_deltas(path, model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            params[name].add_(delta.to(params[name].dtype))
    stops = stop_ids(load_tokenizer(base_dir))  # an adapter keeps the base's tokenizer and stops
    verdict = verify.check(ref, verify.torch_logits_fn(model), kind, stops)
    out: dict[str, Any] = {
        "verify": verify.require(verdict, f"GGUF LoRA {kind} (gguf reader + transformers)"),
        "header": {k: v if isinstance(v, str) else float(v) for k, v in header.items()},
    }
    del model
    llama = _llama_cpp_fn(ctx, path)
    if llama is None:
        out["verify_llama_cpp"] = "skipped: llama_cpp not installed or no base GGUF file"
    else:
        fn, limits, file_stops = llama
        verdict = verify.check(ref, fn, limits, file_stops)
        out["verify_llama_cpp"] = verify.require(verdict, f"GGUF LoRA {kind} (llama.cpp)")
    return out


def _llama_cpp_fn(
    ctx: Context, adapter: Path
) -> tuple[Callable[[list[int]], np.ndarray], str, set[int]] | None:
    """llama.cpp running the base GGUF with ``lora_path``, its limits and its stops; None without
    llama_cpp or a base GGUF (a base from an HF folder has no llama.cpp file of its own)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from finetuneflow.export.gguf_model import source_gguf

    base = source_gguf(ctx.run_dir)
    if base is None:  # a merged GGUF already holds the adapter: nothing to apply it to
        return None
    import gguf

    from finetuneflow.export.gguf_vocab import stop_ids_in_file

    reader = gguf.GGUFReader(str(base))
    file_type = (
        int(reader.fields["general.file_type"].contents()) if "general.file_type" in reader.fields else 1
    )
    base_kind = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    # a quantized base is judged by top-1 agreement; llama.cpp's F16 KV cache rules out f32 limits
    lora = ctx.cfg.gguf_lora_type
    limits = base_kind if base_kind not in LORA_TYPES else ("f16" if lora == "f32" else lora)
    llm = Llama(model_path=str(base), lora_path=str(adapter), logits_all=True, n_ctx=512, n_threads=1,
                verbose=False)  # fmt: skip

    def run(ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)

    return run, limits, stop_ids_in_file(reader)
