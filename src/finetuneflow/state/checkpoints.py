"""Resumable checkpoints in a run folder: trained weights, optimizer, RNG and loop position,
written atomically. The format is shared by every step that trains (causal fine-tuning,
classification); each step keeps its own loop state and hands it over as a JSON-able dict.

A checkpoint is a folder ``checkpoints/step-000120/`` holding

- ``weights.safetensors``: the trainable tensors only (the LoRA matrices and any trained head, or
  every weight for full fine-tuning), by parameter name;
- ``optimizer.safetensors``: AdamW's per-parameter tensors (``state.<i>.exp_avg`` ...) and the
  torch RNG states; no pickles anywhere, so loading a checkpoint runs no code;
- ``state.json``: the step's loop state (``loop``: optimizer steps done and whatever else the loop
  needs to go on), the optimizer's param groups and the grad scaler's state.

The folder is written under a temporary name and renamed into place, so a run killed at any
moment (kill -9 included) leaves either a complete checkpoint or none; leftovers are ignored and
cleaned on the next save.

Sharded tensors (FSDP) are not known here: a caller that shards passes ``gather`` (whole tensor
from a shard; every rank must call :func:`save`) and ``place`` (a whole tensor cut like the
parameter it is loaded into).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetuneflow.state.runs import CHECKPOINTS

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
_PREFIX = "step-"

Gather = Callable[[Any], Any]  # a tensor (maybe a shard) -> the whole tensor
Place = Callable[[Any, Any], Any]  # (whole tensor, the parameter it goes into) -> tensor to copy in


def _whole(tensor: Any) -> Any:
    return tensor


def _as_is(value: Any, _ref: Any) -> Any:
    return value


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary leftovers are not listed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=step_of)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def step_of(folder: Path) -> int:
    """The optimizer step a checkpoint folder was saved at."""
    return int(folder.name[len(_PREFIX) :])


def save(
    run_dir: Path,
    model: Any,
    opt: Any,
    scaler: Any,
    loop: dict[str, Any],
    *,
    step: int,
    keep_last: int,
    keep_step: int = 0,
    write: bool = True,
    gather: Gather = _whole,
) -> Path:
    """Write a checkpoint for optimizer step ``step`` atomically, then prune old ones (all but the
    newest ``keep_last`` and the one of ``keep_step``); returns its folder.

    ``loop`` is the caller's loop state, stored as JSON and given back by :func:`load`. Tensors go
    through ``gather`` first; with ``write`` False nothing is written (a rank that only helps gather).
    """
    import torch
    from safetensors.torch import save_file

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = {n: gather(p.detach()).contiguous().cpu() for n, p in named}
    tensors, groups = _optimizer_tensors(opt, gather)
    root = run_dir / CHECKPOINTS
    final = root / f"{_PREFIX}{step:06d}"
    if not write:
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".partial-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable, str(tmp / WEIGHTS))
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    save_file(tensors, str(tmp / OPTIMIZER))
    meta = {"loop": loop, "param_groups": groups, "scaler": _scaler_state(scaler)}
    _write_synced(tmp / STATE, json.dumps(meta, indent=2))
    if final.exists():  # the same step saved again (e.g. a best checkpoint at the final eval)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(run_dir, keep_last, keep_step)
    return final


def load(folder: Path, model: Any, opt: Any, scaler: Any, place: Place = _as_is) -> dict[str, Any]:
    """Restore weights, optimizer, scaler and RNG from ``folder``; returns the loop state saved with it.

    Raises:
        ValueError: the checkpoint's tensors do not match this model (another model or method).
    """
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / WEIGHTS))
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != wanted:
        missing, extra = sorted(wanted - set(weights))[:3], sorted(set(weights) - wanted)[:3]
        raise ValueError(
            f"checkpoint {folder} does not fit this model (missing {missing}, unexpected {extra}); "
            "was the run started with another base model or method?"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(place(tensor, params[name]))
    meta = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / OPTIMIZER))
    _load_optimizer(opt, tensors, meta["param_groups"], place)
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return dict(meta["loop"])


def load_weights(folder: Path, model: Any) -> None:
    """Only the trained weights of a checkpoint (to restore the best one at the end)."""
    import torch
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(str(folder / WEIGHTS)).items():
            params[name].copy_(tensor)


def prune(run_dir: Path, keep_last: int, keep_step: int = 0) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and the one of ``keep_step`` (the best);
    clear leftovers of other processes."""
    dirs = checkpoint_dirs(run_dir)
    keep = {d for d in dirs[-keep_last:]} | {d for d in dirs if d.name == f"{_PREFIX}{keep_step:06d}"}
    for d in dirs:
        if d not in keep:
            shutil.rmtree(d, ignore_errors=True)
    for leftover in (run_dir / CHECKPOINTS).glob(".partial-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def _optimizer_tensors(opt: Any, gather: Gather) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """AdamW's state as flat named tensors plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {
        f"state.{idx}.{key}": gather(value.detach()).contiguous().cpu()
        for idx, per_param in sd["state"].items()
        for key, value in per_param.items()
        if hasattr(value, "detach")
    }
    return tensors, sd["param_groups"]


def _load_optimizer(opt: Any, tensors: dict[str, Any], groups: list[dict[str, Any]], place: Place) -> None:
    state: dict[int, dict[str, Any]] = {}
    params = [p for group in opt.param_groups for p in group["params"]]  # state index -> parameter
    for name, value in tensors.items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = place(value, params[int(idx)])
    for group in groups:  # JSON turned tuples (betas) into lists; AdamW expects a pair
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _scaler_state(scaler: Any) -> dict[str, Any] | None:
    if scaler is None or not scaler.is_enabled():
        return None
    return {k: (float(v) if hasattr(v, "item") else v) for k, v in scaler.state_dict().items()}


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
