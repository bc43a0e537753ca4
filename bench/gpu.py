"""What only a lent GPU can check (CI never has one): the CUDA training paths, run for real.

1. The card: name, capability, and a bf16 8192^3 matmul's TFLOP/s (CUDA events, median of 10).
2. LoRA on CUDA computes what it computes on a CPU: a tiny random Llama (tests/tiny.py), the same 8
   steps on ``cuda`` (bf16 autocast) and on ``cpu`` (fp32); per-step losses side by side, the
   largest relative difference printed (bf16 rounding puts it near 1e-2; a wrong mask or a dropped
   micro-batch puts it far above).
3. QLoRA (4-bit NF4 base, bitsandbytes) against LoRA on a >= 1B model: a random Llama of
   SmolLM2-1.7B's shape (no hub here, so random weights: speed and memory do not depend on them)
   with SmolLM2's tokenizer, ``--steps`` steps each in its own process: the method the run
   resolved to, first and last loss, real tokens/s and peak GPU memory.
4. ``bench/train.py --model <that folder>``: ours against TRL's defaults and best on the GPU.
5. The training tests (tests/train, tests/models) with the GPU present, under a time limit.

Each part prints one table; the whole log and a JSON of the numbers go to ``--out``.

    python bench/gpu.py --out DIR --tokenizer SMOLLM2_FOLDER [--layers 24] [--steps 6]
                        [--tokens 65536] [--micro 0] [--skip PART,...] [--tests PATH,...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
from train_data import make_rows  # noqa: E402  (bench/ is not a package)

BIG_SHAPE = dict(  # SmolLM2-1.7B's config.json: 1.71B parameters, tied embeddings
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=8192, rope_theta=130000.0, rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def card() -> dict[str, Any]:
    """The GPU and its measured bf16 matmul rate."""
    import torch

    props = torch.cuda.get_device_properties(0)
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 1024**3, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_tflops": round(2 * n**3 / statistics.median(times) / 1e12, 1),
    }


def big_model(path: Path, tokenizer_dir: Path, layers: int, device: str = "cuda") -> Path:
    """A random bf16 Llama of SmolLM2-1.7B's shape (``layers`` decoder layers), saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, path / name)
    tok = AutoTokenizer.from_pretrained(str(path))
    cfg = LlamaConfig(vocab_size=len(tok), **{**BIG_SHAPE, "num_hidden_layers": layers})
    cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(path), safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return path


def chat_dataset(root: Path, model_dir: Path, n: int) -> Path:
    """``n`` bench chat rows (bench/train_data.py) in our dataset layout."""
    from transformers import AutoTokenizer

    from finetuneflow.state.datasets import split_path, write_jsonl

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    write_jsonl(split_path(root, "chat", "train"), make_rows(tok, n, 0, "train"))
    write_jsonl(split_path(root, "chat", "eval"), make_rows(tok, 4, 1, "eval"))
    return root


def train_child(job: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process; its per-step losses, speed and peak GPU memory."""
    import torch

    from finetuneflow.state.datasets import read_jsonl
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.step import train

    run = Path(job["run"])
    summary = train(Path(job["dataset"]), run, TrainConfig(**job["cfg"]))
    steps = [m for m in read_jsonl(run / "metrics.jsonl") if "real_tokens" in m]
    described = json.loads((run / "config.json").read_text())
    return {
        "method": summary["method"],
        "losses": [float(m["loss"]) for m in steps],
        "tokens_per_s": summary["tokens_per_s"],
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else 0.0,
        "device": described.get("device", "?"),
    }


def run_child(job: dict[str, Any], log: Path) -> dict[str, Any]:
    """``train_child`` in a fresh interpreter (its own peak memory); the log's tail when it fails."""
    job_path = Path(job["run"]).with_suffix(".job.json")
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(job))
    with log.open("a") as fh:
        done = subprocess.run([sys.executable, __file__, "--child", str(job_path)], stdout=fh, stderr=fh)
    result = job_path.with_suffix(".result.json")
    if done.returncode != 0 or not result.exists():
        return {"error": f"exit {done.returncode}: " + log.read_text()[-1500:]}
    return json.loads(result.read_text())


def cuda_vs_cpu(root: Path, log: Path) -> dict[str, Any]:
    """The same 8 LoRA steps of a tiny model on the GPU (bf16) and on the CPU (fp32)."""
    from tiny import build_model

    model = build_model(root / "tiny")
    ds = root / "tiny-ds"
    from train.helpers import chat_dataset as tiny_chats

    tiny_chats(ds, 24)
    cfg = dict(base_model=str(model), max_len=64, max_steps=8, epochs=10, learning_rate=5e-3, threads=4,
               eval_every=8)  # fmt: skip
    gpu = run_child({"run": str(root / "tiny-cuda"), "dataset": str(ds),
                     "cfg": {**cfg, "device": "cuda", "precision": "bf16"}}, log)  # fmt: skip
    cpu = run_child({"run": str(root / "tiny-cpu"), "dataset": str(ds),
                     "cfg": {**cfg, "device": "cpu", "precision": "fp32"}}, log)  # fmt: skip
    if "error" in gpu or "error" in cpu:
        return {"cuda": gpu, "cpu": cpu}
    rel = [abs(g - c) / abs(c) for g, c in zip(gpu["losses"], cpu["losses"], strict=True)]
    print("step  cuda bf16  cpu fp32  rel.diff")
    for i, (g, c, r) in enumerate(zip(gpu["losses"], cpu["losses"], rel, strict=True), 1):
        print(f"{i:>4}  {g:9.4f}  {c:8.4f}  {r:8.2e}")
    return {"cuda": gpu, "cpu": cpu, "max_rel_diff": max(rel)}


def qlora_vs_lora(root: Path, big: Path, steps: int, log: Path) -> dict[str, Any]:
    """``steps`` steps of LoRA (bf16 base) and QLoRA (NF4 base) on the big model, each in its own process."""
    ds = chat_dataset(root / "big-ds", big, 64)
    cfg = dict(base_model=str(big), max_len=512, batch_size=4, grad_accum=2, max_steps=steps, epochs=10,
               learning_rate=2e-4, threads=4, eval_every=steps, device="cuda")  # fmt: skip
    out = {m: run_child({"run": str(root / f"big-{m}"), "dataset": str(ds), "cfg": {**cfg, "method": m}}, log)
           for m in ("lora", "qlora")}  # fmt: skip
    print("asked   ran as  first loss  last loss  tok/s    peak GPU GiB")
    for m, r in out.items():
        if "error" in r:
            print(f"{m:<7} FAILED: {r['error'][-600:]}")
            continue
        print(f"{m:<7} {r['method']:<7} {r['losses'][0]:10.4f}  {r['losses'][-1]:9.4f}  "
              f"{r['tokens_per_s']:7.0f}  {r['peak_gpu_gib']:6.2f}")  # fmt: skip
    return out


def bench_train(big: Path, tokens: int, micro: int, log: Path) -> dict[str, Any]:
    """bench/train.py on the big model against TRL (one round: the lease is short)."""
    cmd = [sys.executable, str(BENCH / "train.py"), "--model", str(big), "--rounds", "1", "--threads", "4",
           "--tokens", str(tokens), "--matmul", "8192", "--micro", str(micro)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    with log.open("a") as fh:
        fh.write(done.stdout + done.stderr)
    tail = (done.stdout + done.stderr)[-3000:]
    print(tail)
    return {"rc": done.returncode, "seconds": round(time.perf_counter() - start), "tail": tail}


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def unit_tests(out: Path, paths: list[str], seconds: int) -> dict[str, Any]:
    """Tests with a GPU present (``device: auto`` picks it), under a time limit; failures named."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "--tb=line", "-p", "no:cacheprovider", *paths]
    try:
        done = subprocess.run(cmd, cwd=BENCH.parent, capture_output=True, text=True, timeout=seconds)
        text, rc = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{_text(exc.stdout)}{_text(exc.stderr)}\n(timed out after {seconds} s)", -1
    (out / "pytest.txt").write_text(text)
    print(text[-2500:])
    return {"rc": rc, "tail": text[-800:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-out"))
    parser.add_argument("--tokenizer", type=Path, help="a folder with SmolLM2's tokenizer files")
    parser.add_argument("--layers", type=int, default=24, help="decoder layers of the big model (24: 1.7B)")
    parser.add_argument("--steps", type=int, default=6, help="steps of the QLoRA / LoRA comparison")
    parser.add_argument("--tokens", type=int, default=65536, help="bench/train.py's real-token budget")
    parser.add_argument("--skip", default="", help="comma-separated of: parity,qlora,bench,tests")
    parser.add_argument("--test-seconds", type=int, default=150, help="time limit of the tests part")
    parser.add_argument("--tests", default="tests/train,tests/models", help="comma-separated test paths")
    parser.add_argument("--micro", type=int, default=0, help="bench/train.py --micro (0 = auto)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ftf-gpu"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = train_child(json.loads(args.child.read_text()))
        args.child.with_suffix(".result.json").write_text(json.dumps(result))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log, skip = args.out / "gpu-log.txt", set(args.skip.split(","))
    results: dict[str, Any] = {"card": card()}
    print(json.dumps(results["card"]), flush=True)
    parts = [("parity", lambda: cuda_vs_cpu(args.work, log))]
    if args.tokenizer:
        big = big_model(args.work / "big", args.tokenizer, args.layers)
        parts += [("qlora", lambda: qlora_vs_lora(args.work, big, args.steps, log)),
                  ("bench", lambda: bench_train(big, args.tokens, args.micro, log))]  # fmt: skip
    parts.append(("tests", lambda: unit_tests(args.out, args.tests.split(","), args.test_seconds)))
    for name, part in parts:
        if name in skip:
            continue
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results[name] = part()
        except Exception as exc:  # one part failing must not cost the others' device time
            results[name] = {"error": repr(exc)}
            print(f"{name} FAILED: {exc!r}", flush=True)
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
        (args.out / "gpu.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
