"""Where one training step's time goes: ``bench/train.py --profile`` runs our step under
``torch.profiler`` and splits its CPU time into matmul, attention, RMSNorm, RoPE, SwiGLU, LoRA's
elementwise work, softmax/cross-entropy, casts, the optimizer (with gradient clipping) and the rest.

How time is attributed (self CPU time of every profiled op, so nothing counts twice):
1. by the op's name first: matrix products (forward and backward, LoRA and the LM head too),
   attention kernels, log-softmax/NLL, dtype casts, ``_foreach_*``/AdamW ops;
2. otherwise by the part of the model that ran it: forward hooks wrap each ``*RMSNorm``, ``*MLP``,
   ``*Attention`` and LoRA layer (and the rotary helper and our LM-head loss) in a
   ``record_function`` label; a backward op inherits the label of the forward op that made its
   autograd node (matched by the profiler's sequence numbers), so RoPE's backward is RoPE's;
3. what is left (residual adds, embedding, views, the autograd engine) is "other".
The first optimizer step is not profiled (kernel selection, first-touch page faults). Without
``--ab``, one more step runs without the profiler and times each matrix product (forward and
backward) by its input shapes: the GFLOP/s each shape reaches inside the step (the profiler's own
rates for shapes with large outputs are too low; see ``child_profile``).

``--ab ARM`` profiles ours without and with one change (``ARMS``), alternating ``--rounds`` times in
one run, and prints both profiles, each arm's final loss and its median wall time per step, with the
profiler and on as many steps after them without it (the profiler's per-op cost favours the arm that
runs fewer ops):
- ``fused_adamw``: ``torch.optim.AdamW(fused=True)`` over the LoRA parameters (``loop.FUSED_ADAMW``);
- ``compile``: ``torch.compile`` of every decoder layer (inductor's CPU backend; an experiment kept
  here, not in the product: see docs/ARCHITECTURE.md);
- ``query_parts``: attention's matmul blocks in query parts (``attention.QUERY_ROWS``) or whole;
- ``compiled``: the small functions ``models/compiled.py`` compiles (RMSNorm's forward and
  backward) compiled (``FTF_COMPILE=1``) or eager (the default).
- ``head_chunk``: the fused head's chunks of fp32 products at ``FUSED_CHUNK_LOGITS_FP32`` (the
  default) or at the 16-bit size (``models/loss.py``).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LABEL = "ftf::"
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")
ATTENTION = ("scaled_dot_product", "flash_attention", "aten::_efficient_attention")
LOSS = ("log_softmax", "nll_loss", "cross_entropy", "aten::_softmax")
CASTS = ("aten::to", "aten::_to_copy", "aten::copy_")
OPTIMIZER = ("Optimizer.", "aten::_foreach", "aten::_fused_adam", "aten::clamp_min",
             "aten::linalg_vector_norm")  # fmt: skip
PARTS = {"RMSNorm": "RMSNorm", "MLP": "SwiGLU activation", "Attention": "attention (other)"}
ORDER = ("matmul", "attention core", "softmax / cross-entropy", "casts", "RMSNorm", "RoPE",
         "SwiGLU activation", "LoRA elementwise", "attention (other)", "LM head (other)",
         "optimizer + clipping", "other")  # fmt: skip


def _label(module: Any) -> str | None:
    name = type(module).__name__
    if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
        return "LoRA elementwise"
    return next((part for key, part in PARTS.items() if name.endswith(key)), None)


@contextmanager
def labelled(model: Any) -> Iterator[None]:
    """Wrap the model's parts (and the rotary helper, our head loss) in profiler labels."""
    import torch
    from transformers.models.llama import modeling_llama

    from finetuneflow.models import loss

    handles, stacks = [], defaultdict(list)

    def enter(name: str) -> Callable[..., None]:
        def hook(module: Any, *_: Any) -> None:
            scope = torch.autograd.profiler.record_function(LABEL + name)
            scope.__enter__()
            stacks[id(module)].append(scope)

        return hook

    def leave(module: Any, *_: Any) -> None:
        stacks[id(module)].pop().__exit__(None, None, None)

    for module in model.modules():
        if name := _label(module):
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    patched = {(modeling_llama, "apply_rotary_pos_emb"): "RoPE", (loss, "_head_loss"): "LM head (other)"}
    originals = {key: getattr(*key) for key in patched}
    for (owner, attr), name in patched.items():
        setattr(owner, attr, _scoped(originals[(owner, attr)], name))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)


def _scoped(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    import torch

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.autograd.profiler.record_function(LABEL + name):
            return fn(*args, **kwargs)

    return wrapped


def _by_name(name: str) -> str | None:
    by_name = ((MATMUL, "matmul"), (ATTENTION, "attention core"), (LOSS, "softmax / cross-entropy"),
               (CASTS, "casts"), (OPTIMIZER, "optimizer + clipping"))  # fmt: skip
    for prefixes, part in by_name:
        if any(p in name for p in prefixes):
            return part
    return None


def _scope(event: Any) -> str | None:
    """The nearest ``ftf::`` label above ``event`` (the event itself included)."""
    while event is not None:
        if event.name.startswith(LABEL):
            return str(event.name[len(LABEL) :])
        if event.name.startswith("Optimizer."):
            return "optimizer + clipping"
        event = event.cpu_parent
    return None


def _backward_node(event: Any) -> Any | None:
    while event is not None:
        if event.name.startswith("autograd::engine::evaluate_function"):
            return event
        event = event.cpu_parent
    return None


def _caller(event: Any) -> str:
    """What a cast ran for: the nearest enclosing op that is not a cast (or the backward node)."""
    parent = event.cpu_parent
    while parent is not None and (_by_name(parent.name) == "casts" or parent.name.startswith(LABEL)):
        parent = parent.cpu_parent
    return str(parent.name) if parent is not None else "(top level)"


def split(events: list[Any]) -> tuple[Counter[str], Counter[str], Counter[str], Counter[tuple[str, str]]]:
    """Self CPU microseconds by part, by op name, for casts by what they ran for, and by (part, op
    name), over ``events`` (``prof.events()``)."""
    forward = {e.sequence_nr: _scope(e) for e in events if e.sequence_nr >= 0 and not _backward_node(e)}
    parts: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    casts: Counter[str] = Counter()
    part_ops: Counter[tuple[str, str]] = Counter()
    for e in events:
        if e.name.startswith(LABEL) or e.self_cpu_time_total <= 0:
            continue
        ops[e.name] += e.self_cpu_time_total
        node = _backward_node(e)
        scope = forward.get(node.sequence_nr) if node is not None else _scope(e)
        part = _by_name(e.name) or scope or "other"
        parts[part] += e.self_cpu_time_total
        part_ops[(part, e.name)] += e.self_cpu_time_total
        if part == "casts":
            casts[f"{_caller(e)} [{scope or '-'}]"] += e.self_cpu_time_total
    return parts, ops, casts, part_ops


def _product_flop(name: str, args: tuple[Any, ...]) -> tuple[str, int]:
    """(op and input shapes, FLOPs) of one matrix product; FLOPs 0 when the shapes do not say."""
    mats = [a for a in args if hasattr(a, "shape") and a.dim() >= 2]
    if name in ("addmm", "addmm_", "baddbmm") and len(mats) == 3:
        mats = mats[1:]  # the accumulated input first
    if len(mats) != 2:
        return name, 0
    (*batch, m, k), n = mats[0].shape, mats[1].shape[-1]
    shapes = "x".join(str(tuple(a.shape)) for a in mats)
    return f"{name} {shapes}", 2 * m * k * n * math.prod(batch)


@functools.cache  # built on first use: importing this module does not import torch
def _clock_mode() -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode

    names = {"mm", "addmm", "addmm_", "bmm", "baddbmm"}

    class MatmulClock(TorchDispatchMode):  # type: ignore[misc]
        """Wall time of every matrix product the dispatcher runs (forward and backward), by input
        shapes. On a CPU each op finishes before it returns, so a perf_counter around it is the
        op's own time; no profiler runs, whose bookkeeping slowed the ops with large fresh outputs
        (``child_profile``). Every op passes through Python here: the step slows, the products not."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: dict[str, float] = defaultdict(float)
            self.calls: Counter[str] = Counter()
            self.flop: Counter[str] = Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = func.overloadpacket.__name__
            if name not in names:
                return func(*args, **(kwargs or {}))
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            seconds = time.perf_counter() - start
            key, flop = _product_flop(name, args)
            self.seconds[key] += seconds
            self.calls[key] += 1
            self.flop[key] += flop
            return out

    return MatmulClock


def clock_rows(clock: Any, top: int = 14) -> list[tuple[str, int, float, int]]:
    """(shapes, calls, seconds, FLOPs) of the products that took longest, then one row for the rest."""
    ranked = sorted(clock.seconds, key=clock.seconds.__getitem__, reverse=True)
    rows = [(key, clock.calls[key], clock.seconds[key], clock.flop[key]) for key in ranked[:top]]
    rest = ranked[top:]
    if rest:
        rows.append((f"({len(rest)} other shapes)", sum(clock.calls[k] for k in rest),
                     sum(clock.seconds[k] for k in rest), sum(clock.flop[k] for k in rest)))  # fmt: skip
    return rows


def _fused_adamw(on: bool, model: Any) -> None:
    from finetuneflow.train import loop

    loop.FUSED_ADAMW = on


def _compile_layers(on: bool, model: Any) -> None:
    if not on or model is None:
        return
    backbone = model.get_base_model().model  # PeftModel -> LlamaForCausalLM -> LlamaModel
    for layer in backbone.layers:
        layer.compile(dynamic=True)


def _query_parts(on: bool, model: Any) -> None:
    from finetuneflow.train import attention

    if not on:  # each arm is a fresh process: on is the module's own setting
        attention.QUERY_ROWS = 1 << 30  # every matmul block whole


def _compiled(on: bool, model: Any) -> None:
    import os

    from finetuneflow.models import compiled

    os.environ[compiled.ENV] = "1" if on else "0"  # off by default in the product


def _head_chunk(on: bool, model: Any) -> None:
    from finetuneflow.models import loss

    if not on:  # fp32 products in the 16-bit chunk size, as before they had their own
        loss.FUSED_CHUNK_LOGITS_FP32 = loss.FUSED_CHUNK_LOGITS


# arm name -> (apply before the model is built (model None), and to the built model)
ARMS: dict[str, Callable[[bool, Any], None]] = {
    "fused_adamw": _fused_adamw,
    "compile": _compile_layers,
    "query_parts": _query_parts,
    "compiled": _compiled,
    "head_chunk": _head_chunk,
}


def profile_ab(run_child: Callable[..., dict[str, Any]], job: dict[str, Any], root: Path, arm: str | None,
               rounds: int) -> None:  # fmt: skip
    """One profile, or with ``arm`` the profiles without and with it, alternating ``rounds`` times."""
    if arm is None:
        print_profile(run_child("profile", job, root, "profile"))
        return
    seconds: dict[tuple[str, bool], list[float]] = {}
    for rnd in range(1, rounds + 1):
        for on in (False, True):
            result = run_child("profile", {**job, "arm": arm, "on": on}, root, f"profile-{arm}-{on}-{rnd}")
            print(f"round {rnd}, {arm} {'on' if on else 'off'}: final loss {result['final_loss']:.6f}, "
                  f"{result['plain_seconds'] / result['steps']:.2f} s per unprofiled step, untimed (load, "
                  f"compile, first step, eval, save) {result['outside_s']:.1f} s")  # fmt: skip
            print_profile(result)
            seconds.setdefault(("profiled", on), []).append(result["seconds"] / result["steps"])
            seconds.setdefault(("unprofiled", on), []).append(result["plain_seconds"] / result["steps"])
    for clock in ("unprofiled", "profiled"):
        off, on_ = (statistics.median(seconds[(clock, on)]) for on in (False, True))
        print(f"{arm}: median wall per {clock} step off {off:.3f} s, on {on_:.3f} s "
              f"-> on/off {on_ / off:.3f} ({rounds} round(s) in one run; a shared box: noisy)")  # fmt: skip


def child_profile(job: dict[str, Any]) -> dict[str, Any]:
    """Train ``job['steps']`` + 2 steps with our step; profile all but the first and the last.
    Without an A/B arm one more step follows the profiled ones, unprofiled, with every matrix
    product timed on its own (``MatmulClock``): the profiler's bookkeeping slows the ops that write
    large fresh outputs (in one run with ``record_shapes`` the MLP's 576 -> 1536 products read 121
    GFLOP/s inside the profiler and 184-198 outside it), so their in-step rates come from here.

    With an A/B arm, ``job['steps']`` more steps follow the profiled ones, timed without the
    profiler (its per-op cost favours whichever arm runs fewer ops); a compiled model is not
    labelled (the labels' hooks would break its graphs)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from finetuneflow.events import Event
    from finetuneflow.train import step as train_step
    from finetuneflow.train.config import LoraSettings, TrainConfig

    steps = int(job["steps"])
    prof = profile(activities=[ProfilerActivity.CPU])
    clock: dict[str, float] = {}
    built = train_step.build_model

    arm = ARMS[job["arm"]] if job.get("arm") else None
    if arm:
        arm(bool(job["on"]), None)
    plain = steps if arm else 0  # unprofiled steps timed after the profiled ones
    after = plain or 1  # steps after the profiled ones: the A/B's timed ones, or one with a clock

    def build(*args: Any, **kwargs: Any) -> Any:
        out = built(*args, **kwargs)
        if arm:
            arm(bool(job["on"]), out.model)
        if job.get("arm") != "compile":
            stack.append(labelled(out.model))
            stack[-1].__enter__()
        return out

    def on_event(event: Event) -> None:
        if event.stage != "step":
            return
        if event.done == 1:
            prof.start()
            clock["start"] = time.perf_counter()
        elif event.done == 1 + steps:
            clock["seconds"] = time.perf_counter() - clock["start"]
            prof.stop()
            clock["plain"] = time.perf_counter()
            if not plain:  # the next step: its products timed, no profiler
                stack.append(matmuls)
                matmuls.__enter__()
        elif event.done == 1 + steps + after:
            clock["plain_seconds" if plain else "clocked"] = time.perf_counter() - clock["plain"]
            if not plain:
                stack.remove(matmuls)
                matmuls.__exit__(None, None, None)

    stack: list[Any] = []
    matmuls = _clock_mode()()
    wall = time.perf_counter()
    train_step.build_model = build  # train() builds the model (LoRA attached): label it there
    cfg = TrainConfig(
        base_model=job["model"], max_len=512, batch_size=job["micro"],
        grad_accum=job["batch"] // max(1, job["micro"]),
        max_steps=steps + after + 2, epochs=100.0, learning_rate=2e-4, eval_every=steps + after + 2,
        threads=job["threads"], lora=LoraSettings(r=16, alpha=32),
    )  # fmt: skip
    try:
        summary = train_step.train(Path(job["dataset"]), Path(job["out"]) / "run", cfg, on_event)
    finally:
        train_step.build_model = built
        for scope in stack:
            scope.__exit__(None, None, None)
    parts, ops, casts, part_ops = split(list(prof.events()))
    return {
        "steps": steps, "seconds": clock["seconds"], "parts_us": dict(parts),
        "top_ops_us": dict(ops.most_common(15)), "casts_us": dict(casts.most_common(8)),
        "part_ops_us": {f"{part}: {op}": us for (part, op), us in part_ops.most_common() if part != "matmul"},
        "tokens_per_s": summary["tokens_per_s"], "threads": torch.get_num_threads(),
        "final_loss": summary["final_loss"], "plain_seconds": clock.get("plain_seconds", 0.0),
        "clocked": clock_rows(matmuls) if not plain else [], "clocked_s": clock.get("clocked", 0.0),
        "outside_s": time.perf_counter() - wall - clock["seconds"] - clock.get("plain_seconds", 0.0),
    }  # fmt: skip


def print_profile(result: dict[str, Any]) -> None:
    parts, total = result["parts_us"], max(1, sum(result["parts_us"].values()))
    per_step = result["seconds"] / result["steps"]
    print(f"profile of {result['steps']} optimizer step(s) after the first, {result['threads']} thread(s): "
          f"{per_step:.2f} s per step wall, {total / 1e6 / result['steps']:.2f} s of profiled op time "
          f"per step (the run's {result['tokens_per_s']:.0f} real tok/s; the profiler slows it)")  # fmt: skip
    for part in sorted(parts, key=lambda p: (ORDER.index(p) if p in ORDER else len(ORDER), -parts[p])):
        share, ms = parts[part] / total, parts[part] / 1e3 / result["steps"]
        print(f"  {part:<24} {ms:9.1f} ms/step  {share:6.1%}  {'#' * round(40 * share)}")
    if result.get("clocked"):
        products = sum(row[2] for row in result["clocked"])
        print(f"  the next step without the profiler, each matrix product timed (the rate each shape "
              f"reaches inside the step): {products:.2f} s of the step's {result['clocked_s']:.2f} s "
              f"(the clock slows every other op, not the products)")  # fmt: skip
    for key, calls, seconds, flop in result.get("clocked", []):
        rate = f"{flop / seconds / 1e9:6.1f} GFLOP/s" if flop and seconds else ""
        print(f"    {key:<60} {seconds * 1e3:9.1f} ms  {calls:5d} calls  {rate}")
    for title, key in (("top ops by self time", "top_ops_us"), ("casts, by what they ran for", "casts_us")):
        print(f"  {title}:")
        for name, us in result[key].items():
            print(f"    {name:<60} {us / 1e3 / result['steps']:9.1f} ms/step  {us / total:6.1%}")
    shown: Counter[str] = Counter()
    print("  the ops of each part but matmul (its top 4 by self time):")
    for name, us in result.get("part_ops_us", {}).items():
        part = name.split(": ", 1)[0]
        shown[part] += 1
        if shown[part] <= 4:
            print(f"    {name:<60} {us / 1e3 / result['steps']:9.1f} ms/step  {us / total:6.1%}")
