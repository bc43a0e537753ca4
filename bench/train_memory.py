"""`ftf plan`'s memory estimate against the peak a real run reaches, config by config.

Each configuration trains ``--steps`` real optimizer steps through ``measure.micro_benchmark`` (what
`ftf plan` runs) in a fresh process, on the default model (SmolLM2-135M-Instruct, converted once
like ``bench/train.py``; ``--model`` another) and ``bench/train.py``'s chat workload packed into
512-token rows (one configuration with 1024). Printed per configuration: the estimate's parts,
the estimate, the measured peak (RSS on a CPU: the whole process, runtime included) and their
ratio. The calibration note in ``train/memory.py`` and the table in ``tests/train/test_plan.py``
come from this output (``bench/results/train_memory_avx2.txt``).

The estimate should stay within ~30% of the peak; above 1.3 it sends people to smaller
micro-batches than their machine takes, below 0.7 a run it called safe may run out of memory.

    python bench/train_memory.py [--steps 2] [--only NAME[,NAME]] [--model NAME_OR_PATH] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train import GIB, MODEL_CACHE, prepare_home, write_dataset  # noqa: E402

# name -> TrainConfig changes (threads 1 and batch_size set: one micro-batch at a time unless asked)
CONFIGS: dict[str, dict[str, Any]] = {
    "fp32-b1": {"precision": "fp32", "batch_size": 1},
    "fp32-b2": {"precision": "fp32", "batch_size": 2},
    "fp32-b4": {"precision": "fp32", "batch_size": 4},
    "fp32-auto-2threads": {"precision": "fp32", "batch_size": 0, "threads": 2},  # 1 row x 2 side by side
    "fp32-b2-sdpa": {"precision": "fp32", "batch_size": 2, "attention": "sdpa"},
    "fp32-b1-2048-sdpa": {"precision": "fp32", "batch_size": 1, "max_len": 2048, "attention": "sdpa"},
    "fp32-b1-2048": {"precision": "fp32", "batch_size": 1, "max_len": 2048},  # ours (auto) up to 2048
    "fp32-b2-eager": {"precision": "fp32", "batch_size": 2, "attention": "eager"},  # transformers' own
    "fp32-b2-ckpt": {"precision": "fp32", "batch_size": 2, "gradient_checkpointing": True},
    "fp32-b1-1024": {"precision": "fp32", "batch_size": 1, "max_len": 1024},
    "fp32-b2-full": {"precision": "fp32", "batch_size": 2, "method": "full"},
    "fp32-b2-dropout": {"precision": "fp32", "batch_size": 2, "lora": {"dropout": 0.05}},  # peft's forward
    "bf16-b1": {"precision": "bf16", "batch_size": 1},
    "bf16-b2": {"precision": "bf16", "batch_size": 2},
    "bf16-b4": {"precision": "bf16", "batch_size": 4},
    "bf16-b2-sdpa": {"precision": "bf16", "batch_size": 2, "attention": "sdpa"},
}

CHILD = """
import json, sys
from dataclasses import replace
from pathlib import Path
from finetuneflow.config import from_dict
from finetuneflow.models.resolve import resolve_model
from finetuneflow.train.config import TrainConfig
from finetuneflow.train.machine import probe
from finetuneflow.train.memory import estimate_memory
from finetuneflow.train.measure import micro_benchmark
from finetuneflow.train.plan import example_lengths

dataset, cfg = Path(sys.argv[1]), from_dict(TrainConfig, json.loads(sys.argv[2]))
model_dir = resolve_model(cfg.base_model)
model_cfg = json.loads((model_dir / "config.json").read_text())
_, supervised = example_lengths(model_dir, dataset, cfg)
hw = replace(probe(), cpu_cores=cfg.threads)  # what train/step.split_step sizes the split with
est = estimate_memory(model_cfg, cfg, hw, supervised)
measured = micro_benchmark(dataset, cfg, steps=int(sys.argv[3]))
print("RESULT " + json.dumps({"estimate": est.to_dict(), "supervised": supervised,
                              "peak": measured.peak_memory, "kind": measured.memory_kind,
                              "tokens_per_s": measured.tokens_per_s}))
"""


def run_config(name: str, changes: dict[str, Any], dataset: Path, steps: int, model: str) -> dict[str, Any]:
    cfg = {"base_model": model, "max_len": 512, "grad_accum": 1, "threads": 1, **changes}
    if not cfg["batch_size"]:
        cfg["grad_accum"] = 4  # a step of 4 rows for auto to split
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(dataset), json.dumps(cfg), str(steps)],
        capture_output=True, text=True, env=dict(os.environ), timeout=3600,
    )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def show(name: str, r: dict[str, Any]) -> None:
    est = r["estimate"]
    parts = " ".join(
        f"{k} {est[k] / GIB:.2f}" for k in ("weights", "trainable", "activations", "logits", "overhead")
    )
    total, peak = est["total"] / GIB, r["peak"] / GIB
    print(
        f"{name:<20} estimate {total:5.2f} GiB ({parts}), measured {peak:5.2f} GiB {r['kind']}, "
        f"estimate/measured {total / peak:4.2f}, {est['tokens']} tokens in memory, supervised "
        f"{r['supervised']:.2f}, {r['tokens_per_s']:.0f} tok/s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per configuration (the peak)")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--list", action="store_true", help="print the configurations and stop")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="default name or a local HF folder")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(CONFIGS)
    unknown = sorted(set(names) - set(CONFIGS))
    if args.list or unknown:
        print(("unknown: " + ", ".join(unknown) + "\n" if unknown else "") + "\n".join(CONFIGS))
        raise SystemExit(2 if unknown else 0)
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.models.resolve import resolve_model

    with tempfile.TemporaryDirectory(prefix="ftf-bench-memory-") as tmp:
        prepare_home(Path(tmp))
        tokenizer = load_tokenizer(resolve_model(args.model))
        dataset, _ = write_dataset(Path(tmp), tokenizer, examples=64, seed=0)
        print(
            f"{args.model} (cache {MODEL_CACHE}); {len(names)} configurations, {args.steps} steps each",
            flush=True,
        )
        for name in names:
            show(name, run_config(name, CONFIGS[name], dataset, args.steps, args.model))


if __name__ == "__main__":
    main()
