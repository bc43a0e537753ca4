"""The ``ftf`` command line: a thin layer over :mod:`finetuneflow.api`.

Heavy libraries (torch, transformers, sqlalchemy) are imported inside commands, so ``ftf --help``
answers at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="FineTuneFlow: your material in, a fine-tuned model you run yourself out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dataset_app = typer.Typer(help="Build and inspect datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
console = Console()

Project = Annotated[str, typer.Option("--project", "-p", help="Project name (state lives in $FTF_HOME).")]
RunId = Annotated[str | None, typer.Option("--run", "-r", help="Run id (default: the newest finished run).")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="JSON file of settings for this step.")
]


def _settings(cls: type, file: Path | None, **flags: Any) -> Any:
    """Settings from a JSON file, overridden by flags that were given; all errors at once."""
    from finetuneflow.config import from_dict

    data: dict[str, Any] = json.loads(file.read_text()) if file else {}
    for key, value in flags.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):  # a section: flags win per key
            data[key] = {**data[key], **{k: v for k, v in value.items() if v is not None}}
        elif value is not None:
            data[key] = value
    return from_dict(cls, data)


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(2)


@app.command()
def ingest(
    inputs: Annotated[list[Path], typer.Argument(help="Files and folders to ingest.")],
    project: Project = "default",
    model: Annotated[str | None, typer.Option(help="Model whose tokenizer counts chunk tokens.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Largest chunk in tokens (default 512).")] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Tokens shared by neighbouring chunks (default 50).")
    ] = None,
    domain: Annotated[str | None, typer.Option(help="Only ingest collections of this domain.")] = None,
    scrub_pii: Annotated[
        bool | None, typer.Option("--scrub-pii/--keep-pii", help="Scrub PII at ingest.")
    ] = None,
    dedup: Annotated[
        bool | None, typer.Option("--dedup/--no-dedup", help="Drop duplicate chunks (on).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel reader processes (0 = all cores).")] = None,
    config: ConfigFile = None,
) -> None:
    """Read documents, Q&A sheets, conversations, code and web pages into a project."""
    from finetuneflow import api
    from finetuneflow.ingest.config import IngestConfig
    from finetuneflow.progress import RichProgress

    try:
        cfg = _settings(
            IngestConfig,
            config,
            tokenizer=model,
            max_tokens=max_tokens,
            overlap=overlap,
            domain=domain,
            scrub_pii=scrub_pii,
            dedup=dedup,
            workers=workers,
        )
        with RichProgress() as sink:
            report = api.ingest(inputs, project, cfg, sink)
    except (ValueError, LookupError) as err:
        _fail(err)
    table = Table("file", "status", "chunks", "dropped", "problems")
    for f in report.files:
        colour = {"failed": "red", "partial": "yellow", "skipped": "dim"}.get(f.status, "green")
        drops = ", ".join(f"{n} {why}" for why, n in f.dropped.items())
        table.add_row(
            f.path, f"[{colour}]{f.status}[/{colour}]", str(f.chunks), drops, "; ".join(f.problems)[:200]
        )
    console.print(table)
    console.print(
        f"files: {report.counts()}  dropped: {report.dropped() or 'none'}"
        + (f"  PII replaced: {report.pii}" if report.pii else "")
    )
    if report.failed:
        console.print(f"[red]{len(report.failed)} file(s) failed[/red]; the others were ingested.")
        raise typer.Exit(1)


@app.command()
def train(
    project: Project = "default",
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "default",
    model: Annotated[
        str | None,
        typer.Option(
            help="Base model: smollm2-135m-instruct (default), a .gguf, a folder, org/name, ollama:NAME."
        ),
    ] = None,
    method: Annotated[str | None, typer.Option(help="lora (default), qlora (CUDA) or full.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data (3).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (2e-4).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Packed rows per micro-batch (2).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step (2).")] = None,
    max_len: Annotated[int | None, typer.Option(help="Tokens per packed row (512).")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (16).")] = None,
    rslora: Annotated[bool | None, typer.Option("--rslora/--no-rslora", help="Rank-stabilised LoRA.")] = None,
    dora: Annotated[bool | None, typer.Option("--dora/--no-dora", help="DoRA (weight-decomposed).")] = None,
    checkpointing: Annotated[
        bool | None, typer.Option("--grad-checkpointing/--no-grad-checkpointing", help="Less memory, slower.")
    ] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps (0 = at evals).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stop after N evals without gain.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, 0 = all cores.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16, fp16 or fp32.")] = None,
    parallel: Annotated[
        str | None, typer.Option(help="Under torchrun: ddp (a copy per process) or fsdp (sharded).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this interrupted run id from its last checkpoint.")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Fine-tune the base model (LoRA by default) on a dataset; prints the run id.

    Under `torchrun --nproc_per_node N $(which ftf) train ...` the same command trains data-parallel
    (`--parallel fsdp` shards the weights over the processes instead of copying them).
    """
    from finetuneflow import api
    from finetuneflow.errors import TrainingError
    from finetuneflow.progress import RichProgress
    from finetuneflow.train.config import TrainConfig

    lora = {"r": lora_r, "rslora": rslora, "dora": dora}
    saving = {"every": save_every, "patience": patience}
    try:
        with RichProgress() as sink:
            if resume:
                summary = api.resume(project, resume, sink)
            else:
                cfg = _settings(
                    TrainConfig, config, base_model=model, method=method, epochs=epochs, max_steps=max_steps,
                    learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                    max_len=max_len,
                    threads=threads, precision=precision, parallel=parallel,
                    gradient_checkpointing=checkpointing,
                    lora=_section(lora), checkpoints=_section(saving),
                )  # fmt: skip
                summary = api.train(project, dataset, cfg, sink)
    except (ValueError, LookupError, TrainingError) as err:
        _fail(err)
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


def _section(flags: dict[str, Any]) -> dict[str, Any] | None:
    """The flags given for one config section, or None when none was."""
    given = {k: v for k, v in flags.items() if v is not None}
    return given or None


@app.command()
def evaluate(
    project: Project = "default",
    run: RunId = None,
    answers: Annotated[int | None, typer.Option(help="Questions answered side by side (8).")] = None,
    config: ConfigFile = None,
) -> None:
    """Compare base and tuned model on held-out examples."""
    from finetuneflow import api
    from finetuneflow.evaluate.step import EvalConfig
    from finetuneflow.progress import RichProgress

    try:
        cfg = _settings(EvalConfig, config, answers=answers)
        with RichProgress() as sink:
            result = api.evaluate(project, run, cfg, sink)
    except (ValueError, LookupError, FileNotFoundError) as err:
        _fail(err)
    table = Table("held-out", "examples", "base loss", "tuned loss", "base ppl", "tuned ppl")
    for kind, v in result["losses"].items():
        table.add_row(
            kind,
            str(v["examples"]),
            f"{v['base_loss']:.3f}",
            f"{v['tuned_loss']:.3f}",
            f"{v['base_perplexity']:.1f}",
            f"{v['tuned_perplexity']:.1f}",
        )
    console.print(table)
    for a in result["answers"][:3]:
        console.print(
            f"[bold]Q:[/bold] {a['question']}\n  [dim]base:[/dim]  {a['base'][:160]}\n"
            f"  [green]tuned:[/green] {a['tuned'][:160]}"
        )


@app.command()
def export(
    project: Project = "default",
    run: RunId = None,
    format: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="adapter, merged, gguf, gguf-lora, ollama, onnx, report, zip."),
    ] = None,
    gguf_types: Annotated[
        str | None, typer.Option(help="Comma-separated GGUF types, e.g. q8_0,f16 (default q8_0).")
    ] = None,
    ollama_create: Annotated[
        str | None, typer.Option(help="Run `ollama create NAME` on the Modelfile when ollama is installed.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="SYSTEM prompt for the Modelfile.")] = None,
    verify: Annotated[
        bool | None, typer.Option("--verify/--no-verify", help="Reload and compare every artefact (on).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: project's exports/<run>).")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Export adapter, merged model, GGUF (+ LoRA), Ollama Modelfile, ONNX, report, zip; each verified."""
    from finetuneflow import api
    from finetuneflow.export.step import ExportConfig
    from finetuneflow.progress import RichProgress

    types = [t.strip().lower() for t in gguf_types.split(",") if t.strip()] if gguf_types else None
    try:
        cfg = _settings(
            ExportConfig, config, formats=format, gguf_types=types, ollama_create=ollama_create,
            system=system, verify=verify,
        )  # fmt: skip
        with RichProgress() as sink:
            result = api.export(project, run, cfg, sink, out)
    except (ValueError, LookupError, RuntimeError) as err:
        _fail(err)
    console.print(f"exported to [bold]{result['path']}[/bold]")
    for name, value in result.items():
        if isinstance(value, dict):
            console.print(f"  {name}: {value.get('path', '')}" + _verified_note(value))


def _verified_note(result: dict[str, Any]) -> str:
    """' (verified)' when every verification in an exporter's result passed."""
    found: list[bool] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "passed" in value and "top1_agreement" in value:
                found.append(bool(value["passed"]))
            for inner in value.values():
                walk(inner)

    walk(result)
    return f" [green](verified: {len(found)} check(s))[/green]" if found and all(found) else ""


@app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask the tuned model.")],
    project: Project = "default",
    run: RunId = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 128,
) -> None:
    """Ask the tuned model of a run one question."""
    from finetuneflow import api

    try:
        console.print(api.chat(project, question, run, max_new_tokens))
    except (ValueError, LookupError) as err:
        _fail(err)


@app.command()
def runs(project: Project = "default") -> None:
    """List the runs of a project."""
    from finetuneflow import api

    try:
        rows = api.list_runs(project)
    except LookupError as err:
        _fail(err)
    table = Table("run", "status", "dataset", "base model", "eval loss")
    for r in rows:
        table.add_row(
            r["id"],
            r["status"],
            r["dataset"],
            r["base_model"],
            f"{r['eval_loss']:.3f}" if r["eval_loss"] is not None else "-",
        )
    console.print(table)


@app.command("model")
def model_prepare(
    name: Annotated[str, typer.Argument(help="Model name to resolve.")] = "smollm2-135m-instruct",
) -> None:
    """Resolve a base model to a local safetensors folder (converting a GGUF once) and print it."""
    from finetuneflow.errors import ModelError
    from finetuneflow.models.resolve import resolve_model

    try:
        console.print(str(resolve_model(name)))
    except ModelError as err:
        _fail(err)


def main() -> None:
    app()


# The dataset, review and provider commands live in their own module; importing it registers them.
from finetuneflow import cli_dataset  # noqa: E402, F401
from finetuneflow.cli_classify import register as register_classify  # noqa: E402
from finetuneflow.cli_plan import register as register_plan  # noqa: E402
from finetuneflow.cli_tensors import register as register_tensors  # noqa: E402

register_classify(app)
register_plan(app)
register_tensors(app)

if __name__ == "__main__":
    main()
