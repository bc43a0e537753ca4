"""Exporters by format (a registry), each writing into the export folder and returning what it did.

Every exporter proves its output before reporting success: the merged model must reproduce the
adapter model's logits, and NaN/inf weights are refused before anything is merged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuneflow import paths
from finetuneflow.config import setting
from finetuneflow.errors import ExportError
from finetuneflow.events import Emitter, EventSink
from finetuneflow.state import runs as rf

VERIFY_PROMPT = [{"role": "user", "content": "Summarise what you know in one sentence."}]


GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


@dataclass
class ExportConfig:
    """What to export."""

    formats: list[str] = setting(
        [],
        "Any of: adapter, merged, gguf, gguf-lora, ollama, onnx, report, zip (a classification run: "
        "adapter, report, zip). Empty = the run's defaults: adapter, merged, report (classification: "
        "adapter, report).",
    )
    merge_tolerance: float = setting(1e-3, "Max |logit difference| allowed between merged and adapter model.")
    gguf_types: list[str] = setting(
        ["q8_0"], f"GGUF types of the merged model: {', '.join(GGUF_TYPES)}; K-quants need llama.cpp."
    )
    gguf_lora_type: str = setting("f16", "Tensor type of the GGUF LoRA adapter: f32, f16 or bf16.")
    ollama_create: str = setting("", "Also run `ollama create NAME` when the ollama binary exists ('' = no).")
    system: str = setting("", "SYSTEM prompt for the Ollama Modelfile ('' = the one trained with, if any).")
    onnx_opset: int = setting(18, "ONNX opset of the exported graph.")
    verify: bool = setting(True, "Reload every artefact with an independent reader and compare it.")

    def problems(self) -> list[str]:
        out = []
        unknown = [f for f in self.formats if f not in EXPORTERS]
        if unknown:
            out.append(f"formats: unknown {unknown}; choose from {sorted(EXPORTERS)}")
        bad = [t for t in self.gguf_types if t.lower() not in GGUF_TYPES + K_QUANTS]
        if bad:
            out.append(f"gguf_types: unknown {bad}; choose from {', '.join(GGUF_TYPES + K_QUANTS)}")
        if self.gguf_lora_type not in ("f32", "f16", "bf16"):
            out.append("gguf_lora_type: must be f32, f16 or bf16")
        if not 14 <= self.onnx_opset <= 23:
            out.append("onnx_opset: must be in 14..23 (18 suits onnxruntime >= 1.14)")
        return out


@dataclass
class Context:
    """What every exporter gets: the run, the output folder, settings, and shared, lazily built
    state (the merged model and the trained model's reference answers are built once)."""

    run_dir: Path
    out_dir: Path
    cfg: ExportConfig
    emit: Emitter
    results: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict)

    def tuned(self) -> Any:
        """The run's trained model (:class:`finetuneflow.models.load.Tuned`), loaded once."""
        if "tuned" not in self._cache:
            from finetuneflow.models.load import load_tuned

            self._cache["tuned"] = load_tuned(self.run_dir)
        return self._cache["tuned"]

    def merged(self) -> tuple[Any, Any]:
        """(merged model, tokenizer): the adapter folded into the base (checked), built once."""
        if "merged" not in self._cache:
            self._cache["merged"] = _merge_checked(self)
        return self._cache["merged"]

    def reference(self) -> Any:
        """The trained model's logits and greedy turns on the fixed prompts (export/verify.py)."""
        if "reference" not in self._cache:
            from finetuneflow.export.verify import reference

            model, tokenizer = self.merged()
            self._cache["reference"] = reference(model, tokenizer, stop_ids(tokenizer))
        return self._cache["reference"]


def stop_ids(tokenizer: Any) -> set[int]:
    """The end-of-turn ids the trained model stops on (every exported runtime must stop on them)."""
    from finetuneflow.models.chat import end_of_turn_tokens

    return set(end_of_turn_tokens(tokenizer).values())


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` (recorded in the report)."""
    return {
        str(p.relative_to(folder)): paths.sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def export_adapter(ctx: Context) -> dict[str, Any]:
    """The PEFT adapter folder: loadable with ``PeftModel.from_pretrained`` and no code of ours."""
    if not (ctx.run_dir / rf.ADAPTER).is_dir():
        raise ExportError(f"{ctx.run_dir} was fully fine-tuned and has no adapter; export 'merged' instead")
    target = ctx.out_dir / "adapter"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ctx.run_dir / rf.ADAPTER, target)
    return folder_result(target)


def folder_result(target: Path, **extra: Any) -> dict[str, Any]:
    """What an exporter that wrote a folder returns: its path, size, files with sha256, ``extra``."""
    files = checksums(target)
    size = sum((target / name).stat().st_size for name in files)
    return {"path": str(target), "bytes": size, "files": files, **extra}


def _assert_finite(model: Any, what: str) -> None:
    import torch

    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ExportError(
            f"{what} has NaN/inf values in {len(bad)} tensors (first: {bad[0]}); refusing to merge"
        )


def _verify_logits(model: Any, tokenizer: Any) -> Any:
    import torch

    text = tokenizer.apply_chat_template(VERIFY_PROMPT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _merge_checked(ctx: Context) -> tuple[Any, Any]:
    """Fold the adapter into the base; refuse NaN/inf and a merge that changes the logits."""
    tuned = ctx.tuned()
    model, tokenizer = tuned.model, tuned.tokenizer
    _assert_finite(model, "the adapter model")
    before = _verify_logits(model, tokenizer)
    merged = model if tuned.full else model.merge_and_unload()
    _assert_finite(merged, "the merged model")
    diff = float((_verify_logits(merged, tokenizer) - before).abs().max())
    if diff > ctx.cfg.merge_tolerance:
        raise ExportError(
            f"merged model differs from the adapter model by {diff:.2e} > {ctx.cfg.merge_tolerance}"
        )
    ctx._cache["merge_diff"] = diff
    return merged.eval(), tokenizer


def export_merged(ctx: Context) -> dict[str, Any]:
    """Adapter folded into the base weights, saved as a safetensors folder with tokenizer + template
    (a fully fine-tuned model is saved as it is, after the same checks)."""
    merged, tokenizer = ctx.merged()
    target = ctx.out_dir / "merged"
    if target.exists():
        shutil.rmtree(target)
    merged.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    return folder_result(target, max_logit_diff_vs_adapter=ctx._cache["merge_diff"])


def export_report(ctx: Context) -> dict[str, Any]:
    """report.md + loss.png + metrics/config JSON (see report.py)."""
    from finetuneflow.export.report import write_report

    return write_report(ctx.run_dir, ctx.out_dir, ctx.results)


def _lazy(module: str, name: str) -> Callable[[Context], dict[str, Any]]:
    """An exporter imported when used (they pull in gguf, onnx...; ``ftf --help`` stays fast)."""

    def run(ctx: Context) -> dict[str, Any]:
        import importlib

        exporter: Callable[[Context], dict[str, Any]] = getattr(importlib.import_module(module), name)
        return exporter(ctx)

    run.__name__ = name
    return run


def export_zip(ctx: Context) -> dict[str, Any]:
    """Everything exported so far in one ``<run>.zip`` beside the export folder (text compressed,
    weights stored: they do not compress), written under a temporary name and renamed."""
    import zipfile

    target = ctx.out_dir.parent / f"{ctx.out_dir.name}.zip"
    tmp = target.with_suffix(".zip.tmp")
    binary = {".safetensors", ".gguf", ".onnx", ".data", ".png", ".bin"}
    with zipfile.ZipFile(tmp, "w") as bundle:
        for path in sorted(p for p in ctx.out_dir.rglob("*") if p.is_file()):
            kind = zipfile.ZIP_STORED if path.suffix in binary else zipfile.ZIP_DEFLATED
            bundle.write(path, f"{ctx.out_dir.name}/{path.relative_to(ctx.out_dir)}", compress_type=kind)
    tmp.replace(target)
    with zipfile.ZipFile(target) as bundle:  # reopen: a readable archive with every file, or fail here
        broken = bundle.testzip()
        if broken is not None:
            raise ExportError(f"{target} is corrupt at {broken}")
        count = len(bundle.namelist())
    return {
        "path": str(target),
        "bytes": target.stat().st_size,
        "sha256": paths.sha256_file(target),
        "files": count,
    }


Registry = dict[str, Callable[[Context], dict[str, Any]]]  # format -> exporter

# Order matters: the report describes what the exporters before it produced; the zip holds it all.
EXPORTERS: Registry = {
    "adapter": export_adapter,
    "merged": export_merged,
    "gguf": _lazy("finetuneflow.export.gguf_model", "export_gguf"),
    "gguf-lora": _lazy("finetuneflow.export.gguf_lora", "export_gguf_lora"),
    "ollama": _lazy("finetuneflow.export.ollama", "export_ollama"),  # after both GGUFs: it names them
    "onnx": _lazy("finetuneflow.export.onnx_export", "export_onnx"),
    "report": export_report,
    "zip": export_zip,
}

# A classification run has no language-model head to merge or run in llama.cpp, Ollama or ONNX:
# its adapter (with the trained classification head and the labels) and report are what it makes.
CLASSIFY_EXPORTERS: Registry = {
    "adapter": _lazy("finetuneflow.export.classifier", "export_adapter"),
    "report": _lazy("finetuneflow.export.classifier", "export_report"),
    "zip": export_zip,
}

REGISTRIES = {rf.CAUSAL: EXPORTERS, rf.CLASSIFY: CLASSIFY_EXPORTERS}
DEFAULT_FORMATS = {rf.CAUSAL: ["adapter", "merged", "report"], rf.CLASSIFY: ["adapter", "report"]}
_KIND_NAMES = {rf.CAUSAL: "causal language-model", rf.CLASSIFY: "classification"}


def plan(run_dir: Path, cfg: ExportConfig) -> tuple[Registry, list[str]]:
    """The exporters that apply to the run's kind and the formats to write, in registry order.

    Raises:
        ExportError: a format asked for does not apply to this kind of run (the message names
            the ones that do).
    """
    kind = rf.run_kind(run_dir)
    registry = REGISTRIES[kind]
    wanted = cfg.formats or DEFAULT_FORMATS[kind]
    refused = [f for f in wanted if f not in registry]
    if refused:
        raise ExportError(
            f"{run_dir.name} is a {_KIND_NAMES[kind]} run: it cannot be exported as {', '.join(refused)}; "
            f"the formats that apply are {', '.join(registry)}"
        )
    return registry, [name for name in registry if name in wanted]


def export(
    run_dir: Path, out_dir: Path, cfg: ExportConfig, on_event: EventSink | None = None
) -> dict[str, Any]:
    """Run the configured exporters for a finished run; returns {format: result} and writes export.json.

    Raises:
        ExportError: the run is unfinished, a format does not apply to its kind, or an export failed
            its verification.
    """
    if not (run_dir / rf.SUMMARY).exists():
        raise ExportError(f"{run_dir} is not a finished run (no {rf.SUMMARY}); train it first")
    registry, chosen = plan(run_dir, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(run_dir, out_dir, cfg, Emitter("export", on_event), {})
    for i, name in enumerate(chosen):
        ctx.emit(name, i, len(chosen), message=f"exporting {name}")
        ctx.results[name] = registry[name](ctx)
    (out_dir / "export.json").write_text(json.dumps(ctx.results, indent=2))
    ctx.emit("done", len(chosen), len(chosen), message=f"exported to {out_dir}")
    return ctx.results
