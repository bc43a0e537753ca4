"""``ftf plan``: will a training run fit this machine, what to change if not, and how long it takes.

A thin wrapper over :func:`finetuneflow.train.plan.plan`; ``register(app)`` adds the command to an app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

GIB = 1024**3
PARTS = ("weights", "trainable", "activations", "logits", "overhead", "total")


def register(app: typer.Typer) -> None:
    """Add ``plan`` to ``app``."""
    app.command("plan")(plan_command)


def plan_command(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name.")] = "default",
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "default",
    model: Annotated[str | None, typer.Option(help="Base model (default smollm2-135m-instruct).")] = None,
    method: Annotated[str | None, typer.Option(help="lora, qlora or full.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Packed rows per micro-batch (4).")] = None,
    max_len: Annotated[int | None, typer.Option(help="Tokens per packed row (512).")] = None,
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Run 3 real steps for tokens/s and an ETA.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="JSON file of training settings.")
    ] = None,
) -> None:
    """Check a training run against this machine: memory estimate, recommended changes, tokens/s, ETA."""
    from finetuneflow import paths
    from finetuneflow.config import from_dict
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.plan import plan

    data: dict[str, Any] = json.loads(config.read_text()) if config else {}
    flags = {"base_model": model, "method": method, "batch_size": batch_size, "max_len": max_len}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        cfg = from_dict(TrainConfig, data)
        dataset_dir = paths.project_dir(project) / "datasets" / dataset
        if not dataset_dir.is_dir():
            raise LookupError(f"project {project!r} has no dataset {dataset!r}; run `ftf dataset build`")
        result = plan(dataset_dir, cfg, benchmark=benchmark)
    except (ValueError, LookupError) as err:  # ConfigError and ModelError are ValueErrors
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        show(result)
    if not result["plan"]["fits"]:
        raise typer.Exit(1)


def show(result: dict[str, Any]) -> None:
    """Print a plan (the dict :func:`finetuneflow.train.plan.plan` returns) as Rich tables."""
    hw, rec = result["hardware"], result["plan"]
    table = Table("hardware", "", title="Machine")
    table.add_row("device", f"{hw['device']} ({hw['device_name']})")
    table.add_row("CPU cores", str(hw["cpu_cores"]))
    table.add_row("RAM", f"{_gib(hw['ram_available'])} free of {_gib(hw['ram_total'])}")
    table.add_row("CPU bf16", "yes" if hw["cpu_bf16"] else "no")
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


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s"
