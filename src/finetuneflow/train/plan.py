"""The hardware plan: will this run fit, what to change if not, and how long it will take.

Reads top to bottom as the wizard's Hardware step does:

1. :func:`~finetuneflow.train.machine.probe` the machine,
2. :func:`~finetuneflow.train.memory.estimate_memory` the run from the model's config.json,
3. :func:`recommend` changes (a dispatch chain of moves, first fit wins) with a reason for each,
4. :func:`~finetuneflow.train.measure.micro_benchmark` a few real steps for measured tokens/s and an ETA,
5. :func:`plan` ties them into one JSON-ready dict (``ftf plan`` and the web wizard show it).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from finetuneflow.train.config import TrainConfig
from finetuneflow.train.machine import Hardware, probe
from finetuneflow.train.measure import Measured, micro_benchmark
from finetuneflow.train.memory import (
    GIB,
    HEADROOM,
    MemoryEstimate,
    auto_split,
    compute_precision,
    dims,
    estimate_memory,
)

MAX_TRUNCATED_SHARE = 0.01  # a shorter max_len may cut at most 1% of the examples
MIN_MAX_LEN = 128
# Smaller instruct models to suggest when nothing fits (approximate parameter counts).
SMALLER_MODELS = [
    ("smollm2-135m-instruct", 135e6),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", 362e6),
    ("Qwen/Qwen2.5-0.5B-Instruct", 494e6),
    ("Qwen/Qwen2.5-1.5B-Instruct", 1.54e9),
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71e9),
    ("Qwen/Qwen2.5-3B-Instruct", 3.09e9),
    ("Qwen/Qwen2.5-7B-Instruct", 7.6e9),
]

__all__ = ["Hardware", "Measured", "Plan", "apply_changes", "micro_benchmark", "plan", "probe", "recommend"]


@dataclass
class Plan:
    """What to change in a TrainConfig so the run fits, and why."""

    changes: dict[str, Any]  # dotted TrainConfig keys -> new values (see apply_changes)
    reasons: list[str]  # one human-readable line per decision, in the order taken
    before: MemoryEstimate
    after: MemoryEstimate
    fits: bool
    precision: str  # compute precision recommended for this hardware: bf16, fp16 or fp32
    budget: int  # bytes the plan allows itself (HEADROOM x available)
    memory_kind: str  # "RAM" or "GPU memory"
    truncated: int | None = None  # examples longer than the recommended max_len (None: lengths unknown)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "reasons": self.reasons,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "fits": self.fits,
            "precision": self.precision,
            "budget": self.budget,
            "memory_kind": self.memory_kind,
            "truncated": self.truncated,
        }


def apply_changes(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted-key ``changes`` applied (``{"lora.r": 8}`` reaches a section)."""
    out = cfg
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        if section:
            out = replace(out, **{section: replace(getattr(out, section), **{name: value})})
        else:
            out = replace(out, **{name: value})
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass
class _Search:
    """State shared by the moves of :func:`recommend`."""

    model_cfg: dict[str, Any]
    hw: Hardware
    budget: int
    supervised_fraction: float
    lengths: list[int] | None
    cfg: TrainConfig
    changes: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def estimate(self, cfg: TrainConfig | None = None) -> MemoryEstimate:
        return estimate_memory(self.model_cfg, cfg or self.cfg, self.hw, self.supervised_fraction)

    def fits(self, cfg: TrainConfig | None = None) -> bool:
        return self.estimate(cfg).total <= self.budget

    def take(self, reason: str, **changes: Any) -> None:
        self.cfg = apply_changes(self.cfg, changes)
        self.changes.update(changes)
        self.reasons.append(reason)


def recommend(
    model_cfg: dict[str, Any],
    cfg: TrainConfig,
    hw: Hardware,
    lengths: list[int] | None = None,
    supervised_fraction: float = 0.5,
) -> Plan:
    """Changes that make ``cfg`` fit ``hw`` (tried in order: checkpointing, smaller micro-batch with
    more accumulation, shorter rows if ``lengths`` allow, LoRA instead of full, QLoRA on CUDA).

    ``lengths`` are the training examples' token counts (to say what a shorter max_len truncates);
    ``supervised_fraction`` the share of tokens with labels. Never raises for a config that does not
    fit: the Plan says so (``fits=False``) with what it needs and what the machine has.
    """
    s = _Search(model_cfg, hw, int(hw.memory_available * HEADROOM), supervised_fraction, lengths, cfg)
    _hardware_fixes(s)
    before = estimate_memory(model_cfg, cfg, hw, supervised_fraction)
    for move in MOVES:
        if s.fits():
            break
        move(s)
    after = s.estimate()
    fits = after.total <= s.budget
    if s.cfg.batch_size == 0:
        split = auto_split(model_cfg, s.cfg, hw, supervised_fraction)
        side = f", {split.side} micro-batches side by side (one core each)" if split.side > 1 else ""
        rows = f"{split.rows} of a step's {s.cfg.step_rows} rows at once"
        s.reasons.append(f"micro-batch: {rows}{side} (batch_size 0 = auto)")
    have = f"{_gib(s.budget)} usable ({HEADROOM:.0%} of {_gib(hw.memory_available)} free {hw.memory_kind})"
    if fits:
        s.reasons.append(f"fits: needs ~{_gib(after.total)} of {have}")
    else:
        s.reasons.append(
            f"does not fit: needs ~{_gib(after.total)}, has {have}; use a smaller model "
            f"(e.g. {_smaller_model(after, s.budget)}) or a machine with more {hw.memory_kind}"
        )
        s.reasons += _sharding_hint(s, after)
    truncated = None if lengths is None else sum(n > s.cfg.max_len for n in lengths)
    if truncated and "max_len" not in s.changes:
        n = len(lengths or [])
        s.reasons.append(f"{truncated} of {n} examples are longer than max_len {s.cfg.max_len} (truncated)")
    return Plan(s.changes, s.reasons, before, after, fits, after.compute, s.budget, hw.memory_kind, truncated)


def _cpu_precision(hw: Hardware) -> str:
    """What auto precision computes in on this CPU, and why."""
    speedup = hw.cpu_bf16_speedup
    rate = f"bf16 matmuls measured {speedup:.2f}x fp32's speed here" if speedup else ""
    if hw.cpu_bf16:
        return f"bf16 autocast ({rate or 'this CPU has AVX-512 BF16/AMX'})"
    if hw.cpu_bf16_native:
        return f"fp32 (this CPU has AVX-512 BF16, but {rate or 'bf16 measured slower'})"
    return "fp32 (no native bf16 here)"


def _hardware_fixes(s: _Search) -> None:
    """Settings this hardware cannot run as asked (QLoRA without CUDA, bf16 without bf16 units)."""
    hw, cfg = s.hw, s.cfg
    native = _cpu_precision(hw)
    if cfg.method == "qlora" and hw.device != "cuda":
        s.take(
            f"method qlora -> lora: 4-bit QLoRA needs CUDA here; LoRA trains the same adapter on the "
            f"fp32 base in {native if hw.device == 'cpu' else 'fp32'}",
            method="lora",
        )
    elif cfg.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        s.reasons.append("method qlora needs bitsandbytes: pip install bitsandbytes")
    if hw.device == "cpu" and cfg.precision in ("bf16", "fp16") and not hw.cpu_bf16_native:
        s.take(
            f"precision {cfg.precision} -> fp32: this CPU has no native bf16/fp16 matmuls "
            "(emulated ones run ~100x slower than fp32)",
            precision="fp32",
        )
    elif hw.device == "cpu" and cfg.precision == "fp16":
        s.take(
            "precision fp16 -> bf16: fp16 autocast on a CPU is slow; this CPU has native bf16",
            precision="bf16",
        )
    elif hw.device == "cuda" and cfg.precision == "bf16" and not hw.gpu_bf16:
        s.take(
            f"precision bf16 -> fp16: this GPU (compute capability {hw.compute_capability}) has no bf16",
            precision="fp16",
        )
    precision = compute_precision(s.cfg, hw)
    cpu_bf16 = hw.device == "cpu" and hw.cpu_bf16
    slow = hw.device == "cpu" and hw.cpu_bf16_native and not hw.cpu_bf16
    why = {
        "bf16": (f"{native}, " if cpu_bf16 else "bf16 autocast: native on this hardware, ")
        + "about half the activation memory of fp32"
        + (
            f"; this CPU's bf16 matmuls measured {hw.cpu_bf16_speedup:.2f}x fp32's speed: precision auto "
            "would train in fp32"
            if slow
            else ""
        ),
        "fp16": "fp16 autocast: this GPU has no bf16",
        "fp32": native if hw.device == "cpu" else "fp32 (autocast support varies on this device)",
    }[precision]
    s.reasons.append(f"precision: {why}")


def _checkpointing(s: _Search) -> None:
    if s.cfg.gradient_checkpointing:
        return
    old = s.estimate().activations
    new = s.estimate(replace(s.cfg, gradient_checkpointing=True)).activations
    s.take(
        f"gradient checkpointing on: activations {_gib(old)} -> {_gib(new)} (steps ~30% slower)",
        gradient_checkpointing=True,
    )


def _smaller_micro_batch(s: _Search) -> None:
    """Halve the rows per micro-batch and accumulate more, keeping the effective batch exact."""
    effective = s.cfg.step_rows
    # auto (0) already took the most rows that fit: nothing smaller to try
    sizes = [b for b in range(s.cfg.batch_size - 1, 0, -1) if effective % b == 0]
    if not sizes:
        return
    pick = next((b for b in sizes if s.fits(_batch(s.cfg, b, effective))), sizes[-1])
    old, new = s.cfg, _batch(s.cfg, pick, effective)
    s.take(
        f"micro-batch {old.batch_size} -> {pick} rows with grad_accum {old.grad_accum} -> {new.grad_accum}: "
        f"same effective batch of {effective} rows per optimizer step, ~{_gib(s.estimate(new).total)}",
        batch_size=pick,
        grad_accum=effective // pick,
    )


def _batch(cfg: TrainConfig, b: int, effective: int) -> TrainConfig:
    return replace(cfg, batch_size=b, grad_accum=effective // b)


def _shorter_rows(s: _Search) -> None:
    """Shorter packed rows, only as far as the examples allow (at most 1% of them cut)."""
    if s.lengths is None:
        s.reasons.append("a shorter max_len might help, but the examples' lengths are unknown")
        return
    allowed = math.floor(len(s.lengths) * MAX_TRUNCATED_SHARE)
    options = []
    n = s.cfg.max_len // 2
    while n >= MIN_MAX_LEN:
        cut = sum(x > n for x in s.lengths)
        if cut > allowed:
            break
        options.append((n, cut))
        n //= 2
    if not options:
        longest = max(s.lengths, default=0)
        s.reasons.append(f"max_len stays {s.cfg.max_len}: the longest example has {longest} tokens")
        return
    n, cut = next(((m, c) for m, c in options if s.fits(replace(s.cfg, max_len=m))), options[-1])
    old = s.cfg.max_len
    s.take(
        f"max_len {old} -> {n}: packed rows hold the same tokens in more, shorter rows; "
        f"{cut} of {len(s.lengths)} examples are longer and would be truncated",
        max_len=n,
    )


def _lora_instead_of_full(s: _Search) -> None:
    if s.cfg.method != "full":
        return
    est = s.estimate(replace(s.cfg, method="lora"))
    s.take(
        f"method full -> lora: trains {est.trainable_params / 1e6:.1f}M adapter weights instead of all "
        f"{est.params / 1e6:.0f}M (no gradients or AdamW moments for the base), ~{_gib(est.total)}",
        method="lora",
    )


def _qlora_on_cuda(s: _Search) -> None:
    if s.hw.device != "cuda" or s.cfg.method != "lora":
        return
    installed = importlib.util.find_spec("bitsandbytes") is not None
    est = s.estimate(replace(s.cfg, method="qlora"))
    need = "" if installed else " (needs bitsandbytes, not installed: pip install bitsandbytes)"
    s.take(f"method lora -> qlora: a 4-bit NF4 base, ~{_gib(est.total)}{need}", method="qlora")


MOVES: list[Callable[[_Search], None]] = [
    _checkpointing,
    _smaller_micro_batch,
    _shorter_rows,
    _lora_instead_of_full,
    _qlora_on_cuda,
]


def _sharding_hint(s: _Search, est: MemoryEstimate) -> list[str]:
    """With several GPUs: what each would hold if FSDP sharded the weights and optimizer state."""
    n = s.hw.gpu_count if s.hw.device == "cuda" else 0
    if n < 2:
        return []
    note = ""
    if s.cfg.method == "qlora":  # a 4-bit base cannot be sharded (train/step.py refuses it)
        est, note = s.estimate(replace(s.cfg, method="lora")), " with method=lora"
    # Besides its 1/n: the root unit (embeddings, head, final norm) stays gathered for the whole
    # step, and a decoder layer is gathered while it runs with the next one prefetched.
    d = dims(s.model_cfg)
    root = d.vocab * d.hidden * (1 if d.tied else 2)
    gathered = est.weights / est.params * (root + 2 * (est.params - root) / d.layers)
    per_gpu = (est.weights + est.trainable) / n + gathered + est.activations + est.logits + est.overhead
    verdict = "fits" if per_gpu <= s.budget else "still does not fit"
    return [
        f"sharded over your {n} GPUs{note} (`torchrun --nproc_per_node {n} $(which ftf) train "
        f"--parallel fsdp`): ~{_gib(per_gpu)} per GPU, {verdict}"
    ]


def _smaller_model(est: MemoryEstimate, budget: int) -> str:
    """The largest known smaller model whose (linearly scaled) need fits the budget."""
    fixed = est.overhead
    for name, params in reversed(SMALLER_MODELS):
        if params < est.params * 0.9 and fixed + (est.total - fixed) * params / est.params <= budget:
            return name
    return SMALLER_MODELS[0][0]


def dataset_dir_of(path: Path) -> Path:
    """``path`` itself, or for a project folder its ``datasets/default`` (or its only dataset).

    Raises:
        LookupError: a project folder with no or several datasets and none called 'default'.
    """
    root = path / "datasets"
    if not root.is_dir():
        return path
    if (root / "default").is_dir():
        return root / "default"
    found = sorted(p for p in root.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    names = ", ".join(p.name for p in found) or "none"
    raise LookupError(f"{path} holds datasets {names}; name one (a dataset folder) to plan for")


def example_lengths(model_dir: Path, dataset_dir: Path, cfg: TrainConfig) -> tuple[list[int], float]:
    """Token count of every training example (untruncated) and the share of tokens with labels.

    Raises:
        LookupError: the dataset has no training examples.
    """
    from finetuneflow.models.chat import encode_example
    from finetuneflow.models.load import load_tokenizer
    from finetuneflow.state.datasets import read_split

    tokenizer = load_tokenizer(model_dir)
    records = read_split(dataset_dir, "train", ("chat", "text") if cfg.use_text else ("chat",))
    if not records:
        raise LookupError(f"no training examples in {dataset_dir}; run `ftf dataset build` first")
    encoded = [encode_example(tokenizer, r, 131072) for r in records]  # the largest max_len allowed
    lengths = [len(e.input_ids) for e in encoded]
    return lengths, sum(e.n_supervised for e in encoded) / max(1, sum(lengths))


def plan(path: Path, cfg: TrainConfig, benchmark: bool = True, hw: Hardware | None = None) -> dict[str, Any]:
    """The hardware plan for training ``cfg`` on a dataset (or a project's dataset), as plain JSON data.

    Keys: ``hardware``, ``model``, ``dataset``, ``plan`` (Plan.to_dict) and ``measured``
    (Measured.to_dict after a micro-benchmark of the recommended config, or None with
    ``benchmark_skipped`` saying why), ``goal`` (:func:`~finetuneflow.train.recipe.goal_plan`).
    Raises LookupError/ModelError for a missing dataset or model.
    """
    from finetuneflow.models.resolve import resolve_model
    from finetuneflow.state.datasets import read_split
    from finetuneflow.train.recipe import goal_plan

    dataset_dir = dataset_dir_of(path)
    hw = hw or probe()
    model_dir = resolve_model(cfg.base_model)
    model_cfg = json.loads((model_dir / "config.json").read_text())
    lengths, supervised = example_lengths(model_dir, dataset_dir, cfg)
    rec = recommend(model_cfg, cfg, hw, lengths, supervised)
    out: dict[str, Any] = {
        "hardware": hw.to_dict(),
        "model": {"name": cfg.base_model, "folder": str(model_dir), "params": rec.before.params},
        "dataset": {
            "folder": str(dataset_dir),
            "examples": len(lengths),
            "tokens": sum(lengths),
            "longest": max(lengths),
            "supervised_fraction": round(supervised, 3),
        },
        "plan": rec.to_dict(),
        "measured": None,
    }
    if not benchmark:
        out["benchmark_skipped"] = "not asked for"
    elif not rec.fits:
        out["benchmark_skipped"] = "the configuration does not fit this machine"
    else:
        out["measured"] = micro_benchmark(dataset_dir, apply_changes(cfg, rec.changes)).to_dict()
    speed = {"tokens_per_s": (out["measured"] or {}).get("tokens_per_s"), "cores": hw.cpu_cores,
             "bf16": hw.cpu_bf16, "gpu": hw.device == "cuda"}  # fmt: skip
    has_text = bool(read_split(dataset_dir, "train", ("text",)))
    out["goal"] = goal_plan(apply_changes(cfg, rec.changes), rec.before.params, has_text, lengths, speed)
    return out
