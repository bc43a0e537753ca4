"""LoRA training throughput and peak memory: our training step against TRL's SFTTrainer, with its
shipped defaults and with its best CPU configuration.

All engines fine-tune the same model (default SmolLM2-135M-Instruct, converted once to a safetensors
folder by ``resolve_model``) with LoRA r=16, alpha=32 on every linear layer, on the same chat rows:
256 support-desk conversations (single and multi-turn) whose templated lengths spread evenly over
48-423 tokens (``bench/train_data.py``, deterministic from ``--seed``), written in our dataset
layout (``chat/train.jsonl`` plus an 8-row ``chat/eval.jsonl``). Batch 8, 512 tokens at most.

1. ours: ``finetuneflow.train.step.train(dataset_dir, run_dir, TrainConfig(...))`` with its defaults
   (packed 512-token rows with position-id resets, bf16 autocast where the CPU's bf16 is faster,
   LM head on supervised tokens only, no gradient checkpointing, micro-batches of ``batch_size`` 0 =
   auto: 2 rows on a CPU, 1 in fp32) except: ``base_model`` = the folder, ``max_len=512``,
   ``grad_accum`` so that a step is ``--batch`` packed rows like TRL's (8: the same step, split by
   auto; ``--micro``), ``max_steps`` from the token budget (``epochs`` set high enough that
   max_steps decides), ``threads``, ``eval_every=max_steps`` (one eval and
   checkpoint, after the last step, outside the clock) and
   ``lora=LoraSettings(r=16, alpha=32)`` (also the defaults). Real tokens: the ``real_tokens`` of
   each step in metrics.jsonl; seconds: the summary's ``train_seconds`` (the sum of its optimizer
   steps: no model load, eval or checkpoint save), taken as tokens / its ``tokens_per_s`` because
   ``train_seconds`` is rounded to 0.1 s.
2. TRL defaults: ``SFTTrainer`` as shipped (bf16 autocast, gradient checkpointing, padding to the
   longest row of the batch), and
3. TRL best: its best CPU configuration (bf16 autocast where ours takes it, else fp32; no
   gradient checkpointing, ``padding_free`` or ``packing``, whichever ran faster here; ``--trl-best``
   picks). Both in ``bench/train_trl.py``, which says what each sets and how its real tokens and
   seconds are counted.

Equal work: ``--tokens`` (default 16384) is a budget of real (non-padding) tokens; ours' steps are
the budget over the mean real tokens of 8 packed rows, TRL's the budget over 8 mean-length
examples (TRL best with packing: ours' steps); the counts are printed and the ratios are on real
tokens/s. ``--steps N`` fixes ours' steps and matches TRL's to the same tokens; ``--epochs E`` gives
each engine E passes over the rows (one epoch of 256 rows takes ~4 min for ours and ~11 min for TRL
defaults here).

Each engine runs in its own subprocess (one torch thread by default, ``--threads``; OMP/MKL threads set to
match; ours' with jemalloc preloaded when the machine has it, as ``ftf train`` starts itself, TRL's with
glibc's malloc as shipped unless ``--peer-allocator ours``; each names its malloc), alternating ours, TRL
defaults, TRL best for ``--rounds`` (``--engines`` runs a subset); each child reports its own peak RSS
(``ru_maxrss``, model load included; on a GPU also ``torch.cuda.max_memory_allocated``, which the memory
ratios then compare). Each round also times an n x n matmul (2048, in ours' auto dtype: bf16 where it
measured faster than fp32, else fp32) in a child with the same threads, before the round and again right
after ours (on a shared host the best rate moved 75-94 GFLOP/s between runs minutes apart: the round
takes the higher, the stricter ceiling): its GFLOP/s over ~4·N FLOP per trained token (forward 2N,
backward through the frozen weights 2N; the LoRA matrices are tiny; N = the model's parameters, from the
safetensors headers) is the tokens/s ceiling, and each engine's fraction of it is printed. Also printed,
not judged: tokens/s after the first step (the first step pays kernel selection and first-touch page
faults; each engine's step clock) and the untimed seconds (load, tokenization, eval, saves). Medians over
rounds are compared. Targets (issue 16; printed, never asserted): ours >= 5x TRL defaults' and >= 2x TRL
best's real tokens/s, at <= 0.5x TRL defaults' peak memory, and >= 65% of the ceiling. Numbers on a
shared box are noisy.

``--quick`` is a smoke test (16 rows, batch 2, 2-4 steps each, one round, a 512 matmul; ~1-2 min);
``--model PATH`` takes any local HF folder. ``--profile [STEPS]`` profiles one step of ours
(``bench/train_profile.py``; with ``--ab ARM`` without and with a change, in one run).

    python bench/train.py [--rounds 2] [--threads 1] [--tokens 16384 | --steps N | --epochs E]
                          [--batch 8] [--seed 0] [--model NAME_OR_PATH] [--quick] [--keep]
                          [--engines ours,trl,trl_best] [--trl-best padding_free|packing]
                          [--profile [STEPS] [--ab fused_adamw|compile|query_parts|compiled|head_chunk]]
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

from finetuneflow import allocator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_data import make_rows, n_tokens  # noqa: E402  (bench/ is not a package)
from train_profile import ARMS, child_profile, profile_ab  # noqa: E402
from train_threads import scaling  # noqa: E402
from train_trl import BEST, CONFIGS, steady  # noqa: E402
from train_trl import child_trl as child_sft  # noqa: E402

# issue 16's targets (printed, never asserted)
TARGET_SPEED = 5.0  # ours / TRL defaults, real tokens/s
TARGET_BEST = 2.0  # ours / TRL's best CPU configuration, real tokens/s
TARGET_MEMORY = 0.5  # ours / TRL defaults, peak RSS
TARGET_CEILING = 0.65  # ours / the matmul ceiling (in the compute dtype)
ROW_LEN = 512
MICRO_BATCH = 0  # TrainConfig's default rows per micro-batch (auto); --batch must be a multiple of it
LEARNING_RATE = 2e-4
LORA_R, LORA_ALPHA = 16, 32
FLOP_PER_TOKEN_PER_PARAM = 4  # LoRA step: forward 2N + backward (input grads only) 2N
NAMES = {"ours": "ours", "trl": "TRL defaults", "trl_best": "TRL best"}  # the engines, in run order
ENGINES = tuple(NAMES)
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
        batch_size=min(job["batch"], job["micro"]),  # 0: auto, TrainConfig's default
        grad_accum=job["batch"] // max(1, min(job["batch"], job["micro"])),
        max_steps=job["steps"],
        epochs=float(job["epochs"]),
        learning_rate=LEARNING_RATE,
        eval_every=job["steps"],
        threads=job["threads"],
        lora=LoraSettings(r=LORA_R, alpha=LORA_ALPHA),
        precision=job.get("precision", "auto"),
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
        "steady": steady([int(m["real_tokens"]) for m in steps], times),
        "note": f"summary: {summary['tokens_per_s']} tok/s over {summary['train_seconds']} s; metrics.jsonl: "
        f"last step at {times[-1] if times else float('nan'):.1f} s; final loss "
        f"{summary.get('final_loss', float('nan')):.3f}",
    }


def child_trl(job: dict[str, Any]) -> dict[str, Any]:
    """A TRL peer (``job['config']``: bench/train_trl.py), on the same rows and LoRA as ours."""
    return child_sft(job, ROW_LEN, LEARNING_RATE, LORA_R, LORA_ALPHA)


def child_ceiling(job: dict[str, Any]) -> dict[str, Any]:
    """Best GFLOP/s of an n x n matmul in the engines' compute dtype with the same threads."""
    import torch

    from finetuneflow import hardware

    torch.set_num_threads(job["threads"] or len(os.sched_getaffinity(0)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda" or hardware.cpu_prefers_bf16()
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


def ceiling_gflops(job: dict[str, Any], root: Path, name: str) -> float:
    """One ceiling measurement in its own child, printed; its GFLOP/s."""
    c = run_child("ceiling", job, root, name)
    print(f"{name}: {c['dtype']} matmul {job['matmul']}^2 on {c['device']}: {c['gflops']:.0f} GFLOP/s",
          flush=True)  # fmt: skip
    return float(c["gflops"])


CHILDREN = {"ours": child_ours, "trl": child_trl, "ceiling": child_ceiling, "profile": child_profile}


def child_main(kind: str, job_path: str) -> None:
    """Entry point of a child: run one job, write its result (plus own peak RSS) next to the job."""
    job = json.loads(Path(job_path).read_text())
    result = CHILDREN[kind](job)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result["allocator"] = os.path.basename(allocator.in_use())
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
    if kind in ("ours", "profile") or (kind == "trl" and job.get("peer_allocator") == "ours"):
        env = allocator.preload_env(env) or env  # what `ftf train` starts itself with
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
    after_first = f"{r['steady']:.1f} tok/s" if r["steady"] else "n/a"
    print(
        f"  {name:<12} {r['tokens']:7d} real tokens in {r['seconds']:7.1f} s = {tps:7.1f} tok/s "
        f"({tps / ceiling_tps:5.1%} of ceiling), {r['steps']} steps, "
        f"peak RSS {r['peak_rss'] / GIB:5.2f} GiB, malloc: {r['allocator']}"
        + (f", peak GPU memory {r['peak_gpu'] / GIB:5.2f} GiB" if r.get("peak_gpu") else "")
        + "\n"
        f"               after step 1: {after_first}; untimed (load, tokenize, eval, save): "
        f"{r['outside_s']:.1f} s\n"
        f"               {r['note']}",
        flush=True,
    )


def _median(rs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rs if r[key]]
    return statistics.median(values) if values else float("nan")


def _verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return f"target {'>=' if at_least else '<='} {target:g}x: " + ("met" if met else "NOT met")


def summarize(
    results: dict[str, list[dict[str, Any]]], ceilings: list[float], threads: int, best: str
) -> None:
    ceiling = statistics.median(ceilings)
    for rs in results.values():
        for r in rs:
            r["tps"] = r["tokens"] / r["seconds"]
    tps = {k: _median(rs, "tps") for k, rs in results.items()}
    mem_key = "peak_gpu" if all(r.get("peak_gpu") for rs in results.values() for r in rs) else "peak_rss"
    mem_name = "peak GPU memory" if mem_key == "peak_gpu" else "peak RSS"
    mem = {k: _median(rs, mem_key) for k, rs in results.items()}
    after_first = {k: _median(rs, "steady") for k, rs in results.items()}
    rounds = max(len(rs) for rs in results.values())
    print(f"median of {rounds} round(s), {threads} thread(s); ceiling {ceiling:.0f} tok/s; TRL best = {best}")
    for k in results:
        print(
            f"  {NAMES[k]:<12} {tps[k]:7.1f} real tok/s ({tps[k] / ceiling:.1%} of the ceiling; "
            f"after step 1: {after_first[k]:.1f})  {mem_name} {mem[k] / GIB:5.2f} GiB"
        )
    if "ours" in results:
        share = tps["ours"] / ceiling
        print(f"ours' share of the ceiling: {share:.1%}; target >= {TARGET_CEILING:.0%}: "
              + ("met" if share >= TARGET_CEILING else "NOT met"))  # fmt: skip
    for peer, speed_target, memory_target in (
        ("trl", TARGET_SPEED, TARGET_MEMORY),
        ("trl_best", TARGET_BEST, None),
    ):
        if "ours" not in results or peer not in results:
            continue
        speed, memory = tps["ours"] / tps[peer], mem["ours"] / mem[peer]
        later, verdict = after_first["ours"] / after_first[peer], _verdict(speed, speed_target, True)
        print(f"ours / {NAMES[peer]}: speed (real tokens/s) {speed:.2f}x, {verdict}; "
              f"after step 1 only {later:.2f}x; {mem_name} {memory:.2f}x"
              + (f", {_verdict(memory, memory_target, False)}" if memory_target else ""))  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the engines (medians reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per engine (0: ours' default)")
    work = parser.add_mutually_exclusive_group()
    work.add_argument("--tokens", type=int, default=16384, help="real-token budget per engine")
    work.add_argument("--steps", type=int, default=0, help="ours' steps; TRL's matched to the same tokens")
    work.add_argument("--epochs", type=float, default=0, help="passes over the rows for each engine")
    parser.add_argument("--batch", type=int, default=8, help="rows per step (ours: packed)")
    parser.add_argument(
        "--micro",
        type=int,
        default=MICRO_BATCH,
        help=f"ours' rows per micro-batch (default {MICRO_BATCH} = auto, TrainConfig's: 2 on a CPU, 1 in "
        "fp32)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="ours' TrainConfig.precision (default auto: bf16 where this CPU's bf16 matmuls are faster)",
    )
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="default name or a local HF folder")
    parser.add_argument("--matmul", type=int, default=2048, help="size of the ceiling's square matmul")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 rows, ~2 steps, one round")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (dataset, runs, logs)")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=2,
        default=0,
        metavar="STEPS",
        help="only profile ours, STEPS steps (default 2), by part (bench/train_profile.py)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="only ours: 1 thread vs the default, quiet and busy (bench/train_threads.py)",
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated, of {','.join(ENGINES)} (default: all, in that order)",
    )
    parser.add_argument(
        "--trl-best",
        choices=CONFIGS[1:],
        default=BEST,
        help=f"TRL's best CPU configuration (default {BEST}, the faster here: bench/train_trl.py)",
    )
    parser.add_argument(
        "--ab",
        choices=sorted(ARMS),
        help="with --profile: profile ours without and with this change, alternating --rounds times",
    )
    parser.add_argument(
        "--peer-allocator",
        choices=("system", "ours"),
        default="system",
        help="TRL's malloc: glibc's as shipped (default), or the one `ftf train` preloads (jemalloc)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or set(args.engines) - set(ENGINES):
        parser.error(f"--engines: {args.engines} is not a non-empty list of {', '.join(ENGINES)}")
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
            f"{steps_ours} steps, TRL {steps_trl} steps (TRL best, {args.trl_best}: "
            f"{steps_ours if args.trl_best == 'packing' else steps_trl}); {args.threads} thread(s), "
            f"{args.rounds} round(s)",
            flush=True,
        )
        job = {"model": str(model), "dataset": str(dataset), "batch": args.batch, "threads": args.threads,
               "micro": args.micro, "peer_allocator": args.peer_allocator,
               "precision": args.precision}  # fmt: skip
        if args.profile:
            profile_ab(run_child, {**job, "steps": args.profile}, root, args.ab, args.rounds)
            return
        if args.scaling:
            scaling(run_child, {**job, "steps": steps_ours, "epochs": 100}, root)
            return
        epochs = math.ceil(steps_ours * args.batch / rows) + 1
        jobs = {
            "ours": {**job, "steps": steps_ours, "epochs": epochs},
            "trl": {**job, "steps": steps_trl, "config": "defaults"},
            # TRL's bfd packs rows much like ours: a step of packed rows carries ours' real tokens
            "trl_best": {**job, "steps": steps_ours if args.trl_best == "packing" else steps_trl,
                         "config": args.trl_best},
        }  # fmt: skip
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in jobs if k in args.engines}
        ceilings = []
        ceiling_job = {**job, "matmul": args.matmul}
        for rnd in range(1, args.rounds + 1):
            gflops = [ceiling_gflops(ceiling_job, root, f"ceiling{rnd}a")]
            for engine in results:  # ours, TRL defaults, TRL best, alternating round by round
                r = run_child("ours" if engine == "ours" else "trl", jobs[engine], root, f"{engine}{rnd}")
                results[engine].append(r)
                print(f"{engine}{rnd}: {r['tokens'] / r['seconds']:.1f} real tok/s", flush=True)
                if engine == "ours":  # the ceiling again right after ours; the round takes the higher
                    gflops.append(ceiling_gflops(ceiling_job, root, f"ceiling{rnd}b"))
            ceilings.append(max(gflops) * 1e9 / (FLOP_PER_TOKEN_PER_PARAM * params))
            print(f"round {rnd}: ceiling {ceilings[-1]:.0f} tok/s at {FLOP_PER_TOKEN_PER_PARAM}N FLOP/token "
                  f"(the higher of {len(gflops)} matmul rate(s))", flush=True)  # fmt: skip
            for engine in results:
                report(NAMES[engine], results[engine][-1], ceilings[-1])
        summarize(results, ceilings, args.threads, args.trl_best)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
