"""``ftf train`` and ``ftf plan``: fine-tune on a dataset, or first check that the run fits this machine."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli.common import (
    Background,
    Command,
    ConfigFile,
    Project,
    console,
    enqueue,
    fail,
    opt,
    settings,
)

GIB = 1024**3
PARTS = ("weights", "trainable", "activations", "logits", "overhead", "total")

Dataset = Annotated[str, typer.Option(help="Dataset name.")]
Model = Annotated[str | None, opt("train", "base_model", "--model")]
Method = Annotated[str | None, opt("train", "method")]
BatchSize = Annotated[int | None, opt("train", "batch_size")]
MaxLen = Annotated[int | None, opt("train", "max_len")]


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``plan`` to ``app``."""
    app.command("train", cls=Command)(train)
    app.command("plan", cls=Command)(plan_command)


def train(
    project: Project = "default",
    dataset: Dataset = "default",
    model: Model = None,
    method: Method = None,
    goal: Annotated[str | None, opt("train", "goal")] = None,
    epochs: Annotated[float | None, opt("train", "epochs")] = None,
    max_steps: Annotated[int | None, opt("train", "max_steps")] = None,
    learning_rate: Annotated[float | None, opt("train", "learning_rate", "--lr")] = None,
    batch_size: BatchSize = None,
    grad_accum: Annotated[int | None, opt("train", "grad_accum")] = None,
    max_len: MaxLen = None,
    lora_r: Annotated[int | None, opt("train", "lora.r")] = None,
    rslora: Annotated[bool | None, opt("train", "lora.rslora", "--rslora/--no-rslora")] = None,
    dora: Annotated[bool | None, opt("train", "lora.dora", "--dora/--no-dora")] = None,
    checkpointing: Annotated[
        bool | None,
        opt("train", "gradient_checkpointing", "--grad-checkpointing/--no-grad-checkpointing"),
    ] = None,
    save_every: Annotated[int | None, opt("train", "checkpoints.every")] = None,
    patience: Annotated[int | None, opt("train", "checkpoints.patience")] = None,
    threads: Annotated[int | None, opt("train", "threads")] = None,
    precision: Annotated[str | None, opt("train", "precision")] = None,
    parallel: Annotated[str | None, opt("train", "parallel")] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this interrupted run id from its last checkpoint.")
    ] = None,
    config: ConfigFile = None,
    background: Background = False,
) -> None:
    """Fine-tune the base model (LoRA by default) on a dataset; prints the run id.

    Under `torchrun --nproc_per_node N $(which ftf) train ...` the same command trains data-parallel
    (`--parallel fsdp` shards the weights over the processes instead of copying them).
    """
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.config import to_dict
    from finetuneflow.errors import TrainingError
    from finetuneflow.train.config import TrainConfig

    try:
        cfg = settings(
            TrainConfig, config, base_model=model, method=method, goal=goal, epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
            max_len=max_len, threads=threads, precision=precision, parallel=parallel,
            gradient_checkpointing=checkpointing,
            lora={"r": lora_r, "rslora": rslora, "dora": dora},
            checkpoints={"every": save_every, "patience": patience},
        )  # fmt: skip
        if background:  # a resumed run's job finds its folder started and resumes it
            extra = {"run_id": resume} if resume else {}
            return enqueue("train", project, {"dataset": dataset, "config": to_dict(cfg), **extra})
        with RichProgress() as sink:
            summary = api.resume(project, resume, sink) if resume else api.train(project, dataset, cfg, sink)
    except (ValueError, LookupError, TrainingError) as err:
        fail(err)
    from finetuneflow.train.distributed import from_env

    if not from_env().main:  # under torchrun, rank 0 speaks for the run
        return
    eval_loss = summary.get("eval_loss")
    console.print(
        f"run [bold]{summary['run_id']}[/bold]: {summary['steps']} steps ({summary['status']}), final loss "
        f"{summary['final_loss']:.3f}" + (f", eval loss {eval_loss:.3f}" if eval_loss else "")
    )
    for backoff in summary.get("oom_backoffs", []):
        console.print(f"[yellow]out of memory at step {backoff['step']}[/yellow]: went on with "
                      f"{backoff['micro_size']} row(s) per micro-batch")  # fmt: skip
    console.print(f"folder: {summary['run_dir']}")


def plan_command(
    project: Project = "default",
    dataset: Dataset = "default",
    model: Model = None,
    method: Method = None,
    batch_size: BatchSize = None,
    max_len: MaxLen = None,
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Run 3 real steps for tokens/s and an ETA.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    config: ConfigFile = None,
) -> None:
    """Check a training run against this machine: memory estimate, recommended changes, tokens/s, ETA."""
    from finetuneflow import paths
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.plan import plan

    try:
        cfg = settings(
            TrainConfig, config, base_model=model, method=method, batch_size=batch_size, max_len=max_len
        )
        dataset_dir = paths.project_dir(project) / "datasets" / dataset
        if not dataset_dir.is_dir():
            raise LookupError(f"project {project!r} has no dataset {dataset!r}; run `ftf dataset build`")
        result = plan(dataset_dir, cfg, benchmark=benchmark)
    except (ValueError, LookupError) as err:  # ConfigError and ModelError are ValueErrors
        fail(err)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        show_plan(result)
    if not result["plan"]["fits"]:
        raise typer.Exit(1)


def show_plan(result: dict[str, Any]) -> None:
    """Print a plan (the dict :func:`finetuneflow.train.plan.plan` returns) as Rich tables."""
    hw, rec = result["hardware"], result["plan"]
    table = Table("hardware", "", title="Machine")
    table.add_row("device", f"{hw['device']} ({hw['device_name']})")
    table.add_row("CPU cores", str(hw["cpu_cores"]))
    table.add_row("RAM", f"{_gib(hw['ram_available'])} free of {_gib(hw['ram_total'])}")
    table.add_row("CPU bf16", _bf16_row(hw))
    if hw["device"] == "cuda":
        gpus = f" (GPU 0 of {hw['gpu_count']})" if hw.get("gpu_count", 1) > 1 else ""
        table.add_row("GPU memory", f"{_gib(hw['gpu_free'])} free of {_gib(hw['gpu_total'])}{gpus}")
        table.add_row("compute capability", f"{hw['compute_capability']} (bf16: {hw['gpu_bf16']})")
    table.add_row("disk free (state folder)", _gib(hw["disk_free"]))
    console.print(table)

    est = Table("peak memory", "as configured", "as recommended", title=f"Estimate ({rec['memory_kind']})")
    for part in PARTS:
        est.add_row(part, _gib(rec["before"][part]), _gib(rec["after"][part]))
    est.add_row("usable", "", _gib(rec["budget"]))
    console.print(est)

    if rec["changes"]:
        changes = Table("setting", "recommended", title="Changes")
        for key, value in rec["changes"].items():
            changes.add_row(key, str(value))
        console.print(changes)
    for reason in rec["reasons"]:
        colour = "red" if reason.startswith("does not fit") else "green" if reason.startswith("fits") else ""
        console.print(f"[{colour}]- {reason}[/{colour}]" if colour else f"- {reason}")

    measured = result.get("measured")
    if measured:
        m = Table("measured", "", title=f"Micro-benchmark ({measured['steps']} steps)")
        warm = "" if measured["warmup_skipped"] else " (step 1 included)"
        m.add_row("tokens/s", f"{measured['tokens_per_s']:.1f}{warm}")
        m.add_row(measured["memory_kind"], _gib(measured["peak_memory"]))
        m.add_row("run tokens", f"{measured['run_tokens']:,}")
        m.add_row("ETA", _duration(measured["eta_seconds"]))
        console.print(m)
    elif result.get("benchmark_skipped"):
        console.print(f"micro-benchmark skipped: {result['benchmark_skipped']}")
    _show_goal(result.get("goal"))


def _show_goal(goal: dict[str, Any] | None) -> None:
    """The goal's line and, for the knowledge goal, what each step budget costs here and gives up."""
    if not goal:
        return
    console.print(f"goal: [bold]{goal['goal']}[/bold], learning rate {goal['learning_rate']:g}")
    for note in goal.get("notes", [])[1:]:
        console.print(f"- {note}")
    if not goal.get("budgets"):
        return
    title = f"Knowledge goal here ({goal['speed_source']} {goal['tokens_per_s']:.0f} tokens/s)"
    table = Table("epochs", "time", "gives up", title=title)
    for row in goal["budgets"]:
        table.add_row(f"{row['epochs']:g}", _duration(row["seconds"]), row["gives_up"])
    console.print(table)
    console.print("a smaller budget: `ftf train --max-steps N` (the recall probe still keeps the best step)")


def _bf16_row(hw: dict[str, Any]) -> str:
    speedup = hw.get("cpu_bf16_speedup")
    measured = f" (measured {speedup:.2f}x fp32's matmul speed)" if speedup else ""
    if hw["cpu_bf16"]:
        return "yes" + measured
    return "native, not used: slower than fp32" + measured if speedup else "no"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s"
