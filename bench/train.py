"""LoRA training throughput and peak memory: our training step against TRL's SFTTrainer defaults.

Both engines fine-tune the same model (default SmolLM2-135M-Instruct, converted once to a safetensors
folder by ``resolve_model``) with LoRA r=16, alpha=32 on every linear layer, on the same chat rows:
256 support-desk conversations (single and multi-turn) whose templated lengths spread evenly over
48-423 tokens (``bench/train_data.py``, deterministic from ``--seed``), written in our dataset
layout (``chat/train.jsonl`` plus an 8-row ``chat/eval.jsonl``). Batch 8, 512 tokens at most.

1. ours: ``finetuneflow.train.step.train(dataset_dir, run_dir, TrainConfig(...))`` with its defaults
   (packed 512-token rows with position-id resets, bf16 autocast where the CPU has native bf16,
   LM head on supervised tokens only, no gradient checkpointing, 2 rows per micro-batch) except:
   ``base_model`` = the folder, ``max_len=512``, ``grad_accum`` so that a step is ``--batch`` packed
   rows like TRL's (8 = 2 x 4: the same step, in micro-batches of our default size),
   ``max_steps`` from the token budget (``epochs``
   set high enough that max_steps decides), ``threads``, ``eval_every=max_steps`` (one eval and
   checkpoint, after the last step, outside the clock) and
   ``lora=LoraSettings(r=16, alpha=32)`` (also the defaults). Real tokens: the ``real_tokens`` of
   each step in metrics.jsonl; seconds: the summary's ``train_seconds`` (the sum of its optimizer
   steps: no model load, eval or checkpoint save), taken as tokens / its ``tokens_per_s`` because
   ``train_seconds`` is rounded to 0.1 s.
2. the peer: TRL ``SFTTrainer(model=<folder>, args=SFTConfig(...), train_dataset=Dataset of
   messages, peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
   task_type="CAUSAL_LM"))``. Kept at their defaults: bf16 autocast (``bf16=True``), gradient
   checkpointing on, padding to the longest row of the batch (no packing, no padding_free), loss
   on every token, linear schedule, seed 42, ``logging_steps=10`` to the console. Set:
   ``use_cpu=True`` when there is no GPU (where ours runs too); ``per_device_train_batch_size=8``
   (the default value, set explicitly for ``--batch``); ``max_length=512`` (default 1024: the same
   limit as ours; no example is longer); ``max_steps`` from the token budget;
   ``learning_rate=2e-4`` (default 2e-5: ours' rate; no effect on speed); ``report_to=[]``;
   ``save_strategy="no"`` (the default saves a checkpoint at the last step inside
   ``train_runtime``; ours saves its adapter after its clock stops); ``output_dir`` a temp dir.
   Real tokens: the attention-mask sum of every batch passed to ``training_step`` (a subclass
   that only counts); seconds: ``train_runtime`` of ``trainer.train()`` (model load and dataset
   tokenization happen before it).

Equal work: ``--tokens`` (default 16384) is a budget of real (non-padding) tokens; ours' steps are
the budget over the mean real tokens of 8 packed rows, TRL's the budget over 8 mean-length
examples; both counts are printed and the ratio is on real tokens/s. ``--steps N`` fixes ours'
steps and matches TRL's to the same tokens; ``--epochs E`` gives both E passes over the rows
(one epoch of 256 rows takes ~4 min for ours and ~11 min for TRL here).

Each engine runs in its own subprocess (one torch thread by default, ``--threads``; OMP/MKL threads
set to match), alternating ours, TRL, ours, TRL for ``--rounds``; each child reports its own peak
RSS (``ru_maxrss``, model load included; on a GPU also ``torch.cuda.max_memory_allocated``, which the
memory ratio then compares). Each round also times an n x n matmul (2048, bf16 where
the CPU has native bf16, else fp32) in a child with the same threads: its GFLOP/s over ~4·N FLOP per
trained token (forward 2N, backward through the frozen weights 2N; the LoRA matrices are tiny; N =
the model's parameters, from the safetensors headers) is the tokens/s ceiling, and each engine's
fraction of it is printed. Also printed, not judged: tokens/s after the first step (the first
step pays kernel selection and first-touch page faults; each engine's step clock) and the untimed
seconds (load, tokenization, eval, saves). Medians over rounds are compared. Targets (printed,
never asserted): ours >= 3x TRL's real tokens/s at <= 0.7x its peak memory. Numbers on a shared
box are noisy.

``--quick`` is a smoke test (16 rows, batch 2, 2-4 steps each, one round, a 512 matmul; ~1 min);
``--model PATH`` takes any local HF folder.

    python bench/train.py [--rounds 2] [--threads 1] [--tokens 16384 | --steps N | --epochs E]
                          [--batch 8] [--seed 0] [--model NAME_OR_PATH] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_data import make_rows, n_tokens  # noqa: E402  (bench/ is not a package)
from train_profile import child_profile, print_profile  # noqa: E402
from train_threads import scaling  # noqa: E402

TARGET_SPEED = 3.0  # ours / TRL real tokens/s
TARGET_MEMORY = 0.7  # ours / TRL peak RSS
ROW_LEN = 512
MICRO_BATCH = 2  # TrainConfig's default rows per micro-batch; --batch must be a multiple of it
LEARNING_RATE = 2e-4
LORA_R, LORA_ALPHA = 16, 32
FLOP_PER_TOKEN_PER_PARAM = 4  # LoRA step: forward 2N + backward (input grads only) 2N
MODEL_CACHE = Path.home() / ".cache" / "ftf-bench"
GIB = 1024**3


# ---------------------------------------------------------------- children (one engine each)


def child_ours(job: dict[str, Any]) -> dict[str, Any]:
    """Train with our step; real tokens per step from metrics.jsonl, seconds from the summary."""
    import peft  # noqa: F401  (imported before the clock, as in the TRL child)
    import torch  # noqa: F401

    from finetuneflow.state.datasets import read_jsonl
    from finetuneflow.train.config import LoraSettings, TrainConfig
    from finetuneflow.train.step import train

    run_dir = Path(job["out"]) / "run"
    cfg = TrainConfig(
        base_model=job["model"],
        max_len=ROW_LEN,
        batch_size=min(job["batch"], MICRO_BATCH),
        grad_accum=max(1, job["batch"] // MICRO_BATCH),
        max_steps=job["steps"],
        epochs=float(job["epochs"]),
        learning_rate=LEARNING_RATE,
        eval_every=job["steps"],
        threads=job["threads"],
        lora=LoraSettings(r=LORA_R, alpha=LORA_ALPHA),
    )
    start = time.perf_counter()
    summary = train(Path(job["dataset"]), run_dir, cfg)
    wall = time.perf_counter() - start
    steps = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "real_tokens" in m]
    tokens = sum(int(m["real_tokens"]) for m in steps)
    # train_seconds is rounded to 0.1 s; tokens / tokens_per_s gives the same clock more precisely
    seconds = tokens / summary["tokens_per_s"] if tokens and summary["tokens_per_s"] else 0.0
    seconds = seconds or float(summary["train_seconds"])
    tokens = tokens or round(summary["tokens_per_s"] * seconds)
    times = [float(m["time_s"]) for m in steps if "time_s" in m]
    return {
        "tokens": tokens,
        "seconds": seconds,
        "steps": len(steps) or summary.get("steps"),
        "outside_s": wall - seconds,
        "steady": _steady([int(m["real_tokens"]) for m in steps], times),
        "note": f"summary: {summary['tokens_per_s']} tok/s over {summary['train_seconds']} s; metrics.jsonl: "
        f"last step at {times[-1] if times else float('nan'):.1f} s; final loss "
        f"{summary.get('final_loss', float('nan')):.3f}",
    }


def _steady(tokens: list[int], marks: list[float]) -> float | None:
    """Real tokens/s after the first step (``marks``: clock at the end of each step), if > 1 step."""
    if len(marks) < 2 or len(marks) != len(tokens):
        return None
    return sum(tokens[1:]) / (marks[-1] - marks[0])


def child_trl(job: dict[str, Any]) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (defaults, see the module docstring), counting real tokens."""
    import torch

    torch.set_num_threads(job["threads"] or len(os.sched_getaffinity(0)))
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from finetuneflow.state.datasets import read_jsonl, split_path

    class CountingSFTTrainer(SFTTrainer):  # type: ignore[misc]
        """SFTTrainer that counts the real and padded tokens of the batches it trains on."""

        real: list[int] = []  # per training_step call (= per optimizer step: no accumulation)
        all_tokens = 0

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            self.real.append(int(mask.sum()) if mask is not None else int(ids.numel()))
            self.all_tokens += int(ids.numel())
            return super().training_step(model, inputs, *args, **kwargs)

    class StepClock(TrainerCallback):  # type: ignore[misc]
        marks: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.marks.append(time.perf_counter())

    rows = read_jsonl(split_path(Path(job["dataset"]), "chat", "train"))
    args = SFTConfig(
        output_dir=str(Path(job["out"]) / "trl"),
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=job["batch"],
        max_length=ROW_LEN,
        max_steps=job["steps"],
        learning_rate=LEARNING_RATE,
        report_to=[],
        save_strategy="no",
    )
    lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    trainer = CountingSFTTrainer(
        model=job["model"],
        args=args,
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
        peft_config=lora,
        callbacks=[clock := StepClock()],
    )
    before = time.perf_counter() - start
    train_start = time.perf_counter()
    metrics = trainer.train().metrics
    after = time.perf_counter() - train_start - float(metrics["train_runtime"])
    tokens = sum(trainer.real)
    return {
        "tokens": tokens,
        "seconds": float(metrics["train_runtime"]),
        "steps": trainer.state.global_step,
        "outside_s": before + after,
        "steady": _steady(trainer.real, clock.marks),
        "note": f"padding {1 - tokens / max(1, trainer.all_tokens):.0%} of the batch tokens, "
        f"train_loss {metrics.get('train_loss', float('nan')):.3f}, torch threads {torch.get_num_threads()}",
    }


def child_ceiling(job: dict[str, Any]) -> dict[str, Any]:
    """Best GFLOP/s of an n x n matmul in the engines' compute dtype with the same threads."""
    import torch

    from finetuneflow import hardware

    torch.set_num_threads(job["threads"] or len(os.sched_getaffinity(0)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda" or hardware.cpu_has_bf16()
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = job["matmul"]
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    for _ in range(3):
        a @ b  # warm-up: oneDNN picks and caches its kernel
    best = float("inf")
    for _ in range(5):
        reps, start = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - start < 0.5:
            a @ b
            reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / reps)
    return {"gflops": 2 * n**3 / best / 1e9, "dtype": str(dtype).removeprefix("torch."), "device": device}


CHILDREN = {"ours": child_ours, "trl": child_trl, "ceiling": child_ceiling, "profile": child_profile}


def child_main(kind: str, job_path: str) -> None:
    """Entry point of a child: run one job, write its result (plus own peak RSS) next to the job."""
    job = json.loads(Path(job_path).read_text())
    result = CHILDREN[kind](job)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():  # on a GPU the limit is GPU memory, not RSS
        result["peak_gpu"] = torch.cuda.max_memory_allocated()
    Path(job_path).with_suffix(".result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- parent


def run_child(kind: str, job: dict[str, Any], root: Path, tag: str) -> dict[str, Any]:
    """Run ``kind`` in a fresh interpreter; raises SystemExit with the log's tail when it fails."""
    out = root / tag
    out.mkdir(parents=True)
    job = {**job, "out": str(out)}
    job_path = out / "job.json"
    job_path.write_text(json.dumps(job))
    threads = str(job["threads"] or len(os.sched_getaffinity(0)))  # 0: ours decides, from all cores
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    log = out / "log.txt"
    with log.open("w") as fh:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(job_path)], env=env, stdout=fh, stderr=fh
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{tag} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return dict(json.loads(job_path.with_suffix(".result.json").read_text()))


def prepare_home(root: Path) -> None:
    """``FTF_HOME`` = a fresh folder whose models/ is the persistent cache (converted once)."""
    MODEL_CACHE.joinpath("models").mkdir(parents=True, exist_ok=True)
    home = root / "ftf-home"
    home.mkdir()
    (home / "models").symlink_to(MODEL_CACHE / "models", target_is_directory=True)
    os.environ["FTF_HOME"] = str(home)


def count_params(model_dir: Path) -> int:
    """Parameters stored in the folder's safetensors files (headers only; tied weights once)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def write_dataset(root: Path, tokenizer: Any, examples: int, seed: int) -> tuple[Path, list[int]]:
    """Our dataset layout with ``examples`` train rows and 8 eval rows; the train rows' lengths."""
    from finetuneflow.state.datasets import split_path, write_jsonl

    dataset = root / "dataset"
    train_rows = make_rows(tokenizer, examples, seed, "train")
    write_jsonl(split_path(dataset, "chat", "train"), train_rows)
    write_jsonl(split_path(dataset, "chat", "eval"), make_rows(tokenizer, 8, seed + 1, "eval"))
    return dataset, [n_tokens(tokenizer, r["messages"]) for r in train_rows]


def packed_rows(tokenizer: Any, dataset: Path) -> int:
    """Rows our packer makes of the train split (to turn a token budget into our steps)."""
    from finetuneflow.models.chat import encode_example, pack
    from finetuneflow.state.datasets import read_jsonl, split_path

    records = read_jsonl(split_path(dataset, "chat", "train"))
    encoded = [encode_example(tokenizer, r, ROW_LEN) for r in records]
    return len(pack(encoded, ROW_LEN, tokenizer.pad_token_id or 0))


def plan_steps(args: argparse.Namespace, lengths: list[int], rows: int) -> tuple[int, int, float]:
    """Optimizer steps for ours and TRL doing about the same real tokens, and the planned count."""
    total = sum(lengths)
    per_ours = total / rows * args.batch  # real tokens in one step of packed rows
    per_trl = total / len(lengths) * args.batch
    if args.epochs:
        ours = math.ceil(rows * args.epochs / args.batch)
        trl = math.ceil(len(lengths) * args.epochs / args.batch)
        return ours, trl, total * args.epochs
    budget = args.steps * per_ours if args.steps else args.tokens
    ours = args.steps or max(args.min_steps, round(budget / per_ours))
    return ours, max(args.min_steps, round(ours * per_ours / per_trl)), ours * per_ours


def report(name: str, r: dict[str, Any], ceiling_tps: float) -> None:
    tps = r["tokens"] / r["seconds"]
    steady = f"{r['steady']:.1f} tok/s" if r["steady"] else "n/a"
    print(
        f"  {name:<4} {r['tokens']:7d} real tokens in {r['seconds']:7.1f} s = {tps:7.1f} tok/s "
        f"({tps / ceiling_tps:5.1%} of ceiling), {r['steps']} steps, "
        f"peak RSS {r['peak_rss'] / GIB:5.2f} GiB"
        + (f", peak GPU memory {r['peak_gpu'] / GIB:5.2f} GiB" if r.get("peak_gpu") else "")
        + "\n"
        f"       after step 1: {steady}; untimed (load, tokenize, eval, save): {r['outside_s']:.1f} s\n"
        f"       {r['note']}",
        flush=True,
    )


def _median(rs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rs if r[key]]
    return statistics.median(values) if values else float("nan")


def summarize(results: dict[str, list[dict[str, Any]]], ceilings: list[float], threads: int) -> None:
    ceiling = statistics.median(ceilings)
    for r in results["ours"] + results["trl"]:
        r["tps"] = r["tokens"] / r["seconds"]
    tps = {k: _median(rs, "tps") for k, rs in results.items()}
    mem_key = "peak_gpu" if all(r.get("peak_gpu") for rs in results.values() for r in rs) else "peak_rss"
    mem_name = "peak GPU memory" if mem_key == "peak_gpu" else "peak RSS"
    rss = {k: _median(rs, mem_key) for k, rs in results.items()}
    steady = {k: _median(rs, "steady") for k, rs in results.items()}
    print(f"median of {len(results['ours'])} round(s), {threads} thread(s); ceiling {ceiling:.0f} tok/s")
    for k, name in (("ours", "ours"), ("trl", "TRL")):
        print(
            f"  {name:<4} {tps[k]:7.1f} real tok/s ({tps[k] / ceiling:.1%} of the ceiling; after step 1: "
            f"{steady[k]:.1f})  {mem_name} {rss[k] / GIB:5.2f} GiB"
        )
    speed, memory = tps["ours"] / tps["trl"], rss["ours"] / rss["trl"]
    print(f"  (after step 1 only: ours/TRL {steady['ours'] / steady['trl']:.2f}x)")
    print(
        f"speed ratio ours/TRL (real tokens/s): {speed:.2f}x; target >= {TARGET_SPEED:.0f}x: "
        + ("met" if speed >= TARGET_SPEED else "NOT met")
    )
    print(
        f"memory ratio ours/TRL ({mem_name}): {memory:.2f}x; target <= {TARGET_MEMORY}x: "
        + ("met" if memory <= TARGET_MEMORY else "NOT met")
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="ours, TRL pairs to run (medians reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per engine (0: ours' default)")
    work = parser.add_mutually_exclusive_group()
    work.add_argument("--tokens", type=int, default=16384, help="real-token budget per engine")
    work.add_argument("--steps", type=int, default=0, help="ours' steps; TRL's matched to the same tokens")
    work.add_argument("--epochs", type=float, default=0, help="passes over the rows for both")
    parser.add_argument("--batch", type=int, default=8, help="rows per step (ours: packed)")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="default name or a local HF folder")
    parser.add_argument("--matmul", type=int, default=2048, help="size of the ceiling's square matmul")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 rows, ~2 steps, one round")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (dataset, runs, logs)")
    parser.add_argument("--profile", type=int, nargs="?", const=2, default=0, metavar="STEPS",
                        help="only profile ours, STEPS steps (default 2), by part (bench/train_profile.py)")
    parser.add_argument("--scaling", action="store_true",
                        help="only ours: 1 thread vs the default, quiet and busy (bench/train_threads.py)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.min_steps = 1
    if args.quick:
        args.examples, args.rounds, args.matmul, args.min_steps, args.batch = 16, 1, 512, 2, 2
        args.tokens = min(args.tokens, 1024)
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(*args.child)
        return
    root = Path(tempfile.mkdtemp(prefix="ftf-bench-train-"))
    try:
        prepare_home(root)
        from finetuneflow.models.load import load_tokenizer
        from finetuneflow.models.resolve import resolve_model

        model = resolve_model(args.model)
        tokenizer = load_tokenizer(model)
        dataset, lengths = write_dataset(root, tokenizer, args.examples, args.seed)
        rows = packed_rows(tokenizer, dataset)
        steps_ours, steps_trl, planned = plan_steps(args, lengths, rows)
        params = count_params(model)
        print(
            f"model {model} ({params / 1e6:.1f}M params); {len(lengths)} chat rows of {min(lengths)}-"
            f"{max(lengths)} tokens (median {statistics.median(lengths):.0f}, {sum(lengths)} in all) -> "
            f"{rows} packed rows of {ROW_LEN}\nbatch {args.batch}, ~{planned:.0f} real tokens each: ours "
            f"{steps_ours} steps, TRL {steps_trl} steps; {args.threads} thread(s), {args.rounds} round(s)",
            flush=True,
        )
        job = {"model": str(model), "dataset": str(dataset), "batch": args.batch, "threads": args.threads}
        if args.profile:
            print_profile(run_child("profile", {**job, "steps": args.profile}, root, "profile"))
            return
        if args.scaling:
            scaling(run_child, {**job, "steps": steps_ours, "epochs": 100}, root)
            return
        epochs = math.ceil(steps_ours * args.batch / rows) + 1
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "trl": []}
        ceilings = []
        for rnd in range(1, args.rounds + 1):
            c = run_child("ceiling", {**job, "matmul": args.matmul}, root, f"ceiling{rnd}")
            ceilings.append(c["gflops"] * 1e9 / (FLOP_PER_TOKEN_PER_PARAM * params))
            print(
                f"round {rnd}: {c['dtype']} matmul {args.matmul}^2 on {c['device']}: "
                f"{c['gflops']:.0f} GFLOP/s -> ceiling {ceilings[-1]:.0f} tok/s "
                f"at {FLOP_PER_TOKEN_PER_PARAM}N FLOP/token",
                flush=True,
            )
            results["ours"].append(
                run_child("ours", {**job, "steps": steps_ours, "epochs": epochs}, root, f"ours{rnd}")
            )
            report("ours", results["ours"][-1], ceilings[-1])
            results["trl"].append(run_child("trl", {**job, "steps": steps_trl}, root, f"trl{rnd}"))
            report("TRL", results["trl"][-1], ceilings[-1])
        summarize(results, ceilings, args.threads)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
