"""Export time per format for the default model: our writers, verification included and apart.

Builds a run folder around SmolLM2-135M-Instruct (the default model, converted once) with a LoRA
adapter r16 on all linear layers whose B matrices are small random values (a trained adapter's
shape and cost; zero B would make merging trivial), then exports it through the real registry,
one format at a time, and prints for each: seconds to write (as the exporter measured it where it
reports one), total seconds with verification (reload by an independent reader and comparison
with the trained model on fixed prompts), size and the verdict's numbers.

The peer: llama.cpp's ``convert_hf_to_gguf.py`` on the same merged folder, when a llama.cpp
checkout is given with ``--llama-cpp DIR`` (none can be downloaded here); its wall time for the
same outtype is printed beside ours and the ratio. Without it the peer column says so.
FACTS.md measured ~0.6 s for Q8_0 quantization of this model.

    python bench/export.py [--types f32,f16,bf16,q8_0,q5_1,q5_0,q4_1,q4_0] [--onnx] [--llama-cpp DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_CACHE = Path.home() / ".cache" / "ftf-bench"
PEER_TYPES = {"f32": "f32", "f16": "f16", "bf16": "bf16", "q8_0": "q8_0"}  # convert_hf_to_gguf outtypes


def make_run(root: Path) -> Path:
    """A run folder (config.json, summary.json, adapter/) around the default model."""
    import torch

    from finetuneflow.models.load import load_causal_lm, load_tokenizer
    from finetuneflow.models.resolve import resolve_model
    from finetuneflow.state import runs as rf
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.model_setup import attach_lora

    model_dir = resolve_model("smollm2-135m-instruct")
    run = root / "run"
    torch.manual_seed(0)
    model = attach_lora(load_causal_lm(model_dir), TrainConfig())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1e-3)
    model.save_pretrained(str(run / rf.ADAPTER))
    load_tokenizer(model_dir).save_pretrained(str(run / rf.ADAPTER))
    rf.write_json(run / rf.CONFIG, {"model_dir": str(model_dir), "train": {}, "dataset": str(root)})
    rf.write_json(run / rf.SUMMARY, {"status": "finished"})
    return run


def time_format(ctx: Any, name: str) -> tuple[float, dict[str, Any]]:
    from finetuneflow.export.step import EXPORTERS

    start = time.perf_counter()
    result = EXPORTERS[name](ctx)
    return time.perf_counter() - start, result


def peer_seconds(llama_cpp: Path | None, merged: Path, out: Path, kind: str) -> str:
    """Wall seconds of llama.cpp's converter for ``kind``, or why there is none."""
    if llama_cpp is None:
        return "no llama.cpp checkout (--llama-cpp)"
    if kind not in PEER_TYPES:
        return "not an outtype of convert_hf_to_gguf.py"
    script = llama_cpp / "convert_hf_to_gguf.py"
    if not script.is_file():
        return f"{script} not found"
    start = time.perf_counter()
    cmd = [sys.executable, str(script), str(merged), "--outtype", PEER_TYPES[kind], "--outfile", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return f"{time.perf_counter() - start:.2f}"


def _verdict(v: dict[str, Any]) -> str:
    return f"diff {v['max_abs_diff']:<9.3g} top-1 {v['top1_agreement']:.3f} {'ok' if v['passed'] else 'FAIL'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="f32,f16,bf16,q8_0,q5_1,q5_0,q4_1,q4_0")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX export (~1.5 min)")
    parser.add_argument("--llama-cpp", type=Path, help="a llama.cpp checkout to time its converter")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="ftf-bench-export-"))
    try:
        MODEL_CACHE.joinpath("models").mkdir(parents=True, exist_ok=True)
        os.environ["FTF_HOME"] = str(root / "home")
        (root / "home").mkdir()
        (root / "home" / "models").symlink_to(MODEL_CACHE / "models", target_is_directory=True)
        from finetuneflow.events import Emitter
        from finetuneflow.export.step import Context, ExportConfig

        run = make_run(root)
        out = root / "out"
        out.mkdir()
        cfg = ExportConfig(gguf_types=[t.strip() for t in args.types.split(",") if t.strip()])
        ctx = Context(run, out, cfg, Emitter("export", None), {})
        start = time.perf_counter()
        ctx.reference()  # merge + reference answers, shared by every format below
        print(f"merge and reference answers (once): {time.perf_counter() - start:.2f} s")
        seconds, merged = time_format(ctx, "merged")
        ctx.results["merged"] = merged
        print(f"{'format':<12}{'write s':>9}{'total s':>9}{'MB':>8}  {'verification':<40} llama.cpp s")
        print(f"{'merged':<12}{'':>9}{seconds:>9.2f}{merged['bytes'] / 1e6:>8.1f}  safetensors folder")
        total, result = time_format(ctx, "gguf")
        ctx.results["gguf"] = result
        for kind, item in result["files"].items():
            v = item["verify"]
            peer = peer_seconds(args.llama_cpp, Path(merged["path"]), root / f"peer-{kind}.gguf", kind)
            print(
                f"{'gguf ' + kind:<12}{item['seconds']:>9.2f}{'':>9}{item['bytes'] / 1e6:>8.1f}  "
                f"{_verdict(v)}"
                f"{'':<6} {peer}"
            )
        print(f"{'gguf (all)':<12}{'':>9}{total:>9.2f}   (writes + transformers reloads + comparisons)")
        seconds, lora = time_format(ctx, "gguf-lora")
        v = lora["verify"]
        print(f"{'gguf-lora':<12}{'':>9}{seconds:>9.2f}{lora['bytes'] / 1e6:>8.1f}  {_verdict(v)}")
        if args.onnx:
            seconds, onnx = time_format(ctx, "onnx")
            v = onnx["verify"]
            size = sum(f.stat().st_size for f in Path(onnx["path"]).rglob("*.onnx*")) / 1e6
            print(f"{'onnx':<12}{'':>9}{seconds:>9.2f}{size:>8.1f}  {_verdict(v)}")
        (root / "results.json").write_text(json.dumps(ctx.results, default=str))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
