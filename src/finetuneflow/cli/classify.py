"""``ftf classify train`` and ``ftf classify predict``: thin wrappers over :mod:`finetuneflow.api`.

Runs live in the project like every training run: ``ftf runs`` lists them, ``ftf export`` writes
their adapter and report. torch, transformers and peft are imported inside the commands only, so
``ftf --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli.common import Command, ConfigFile, Project, console, fail, opt, settings


def register(app: typer.Typer) -> None:
    """Add the ``classify`` command group to ``app``."""
    group = typer.Typer(
        help="Sequence classification: LoRA on a labelled CSV (text, label), scored by accuracy and F1.",
        no_args_is_help=True,
    )
    group.command("train", cls=Command)(classify_train)
    group.command("predict")(classify_predict)
    app.add_typer(group, name="classify")


def classify_train(
    csv_file: Annotated[
        Path | None, typer.Argument(help="Labelled CSV/TSV with a header row.", metavar="[CSV]")
    ] = None,
    project: Project = "default",
    resume: Annotated[
        str | None, typer.Option(help="Continue this interrupted run id from its last checkpoint.")
    ] = None,
    model: Annotated[str | None, opt("classify", "base_model", "--model")] = None,
    eval_csv: Annotated[
        Path | None, typer.Option(help="Separate labelled eval file (default: a stratified split).")
    ] = None,
    text_column: Annotated[str | None, opt("classify", "text_column")] = None,
    label_column: Annotated[str | None, opt("classify", "label_column")] = None,
    eval_fraction: Annotated[float | None, opt("classify", "eval_fraction")] = None,
    epochs: Annotated[float | None, opt("classify", "epochs")] = None,
    max_steps: Annotated[int | None, opt("classify", "max_steps")] = None,
    learning_rate: Annotated[float | None, opt("classify", "learning_rate", "--lr")] = None,
    batch_size: Annotated[int | None, opt("classify", "batch_size")] = None,
    max_len: Annotated[int | None, opt("classify", "max_len")] = None,
    lora_r: Annotated[int | None, opt("classify", "lora.r")] = None,
    save_every: Annotated[int | None, opt("classify", "checkpoints.every")] = None,
    threads: Annotated[int | None, opt("classify", "threads")] = None,
    precision: Annotated[str | None, opt("classify", "precision")] = None,
    seed: Annotated[int | None, opt("classify", "seed")] = None,
    config: ConfigFile = None,
) -> None:
    """Train a classifier of the CSV's labels (or --resume one); prints the run id, accuracy, macro-F1."""
    from finetuneflow import api
    from finetuneflow.classify.config import ClassifyConfig
    from finetuneflow.cli.progress import RichProgress

    flags: dict[str, Any] = dict(
        base_model=model, text_column=text_column, label_column=label_column, eval_fraction=eval_fraction,
        epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
        max_len=max_len, threads=threads, precision=precision, seed=seed, lora={"r": lora_r},
        checkpoints={"every": save_every},
    )  # fmt: skip
    try:
        if resume:
            _check_nothing_else(resume, csv_file or eval_csv, flags, config)
            with RichProgress() as sink:
                summary = api.resume_classifier(project, resume, sink)
        elif csv_file is None:
            raise ValueError("give a labelled CSV to train on, or --resume RUN to continue a run")
        else:
            cfg = settings(ClassifyConfig, config, **flags)
            with RichProgress() as sink:
                summary = api.train_classifier(project, csv_file, cfg, sink, eval_csv)
    except (ValueError, LookupError, RuntimeError, OSError) as err:
        fail(err)
    _print_summary(summary)


def _check_nothing_else(run_id: str, files: Path | None, flags: dict[str, Any], config: Path | None) -> None:
    """A resumed run keeps its files and settings: refuse any given with --resume."""

    def given(value: Any) -> bool:
        return any(v is not None for v in value.values()) if isinstance(value, dict) else value is not None

    named = ["the CSV"] * bool(files) + sorted(k for k, v in flags.items() if given(v))
    named += ["--config"] * bool(config)
    if named:
        raise ValueError(
            f"--resume continues {run_id!r} with the files and settings it started with; drop "
            + ", ".join(named)
        )


def _print_summary(summary: dict[str, Any]) -> None:
    result, base = summary["eval"], summary["majority_baseline"]
    console.print(
        f"run [bold]{summary['run_id']}[/bold]: accuracy [bold]{result['accuracy']:.3f}[/bold] "
        f"(majority baseline {base['accuracy']:.3f}, always {base['label']!r}), macro-F1 "
        f"[bold]{result['macro_f1']:.3f}[/bold] on {result['examples']} eval examples after "
        f"{summary['steps']} steps"
    )
    table = Table("class", "precision", "recall", "F1", "support")
    for name, m in result["per_class"].items():
        table.add_row(
            name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])
        )
    console.print(table)
    matrix = Table("true \\ predicted", *summary["labels"])
    for name, row in zip(summary["labels"], result["confusion_matrix"], strict=True):
        matrix.add_row(name, *(str(n) for n in row))
    console.print(matrix)
    console.print(f"folder: {summary['run_dir']}", highlight=False)


def classify_predict(
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    project: Project = "default",
    run: Annotated[
        str | None, typer.Option("--run", "-r", help="Run id (default: the newest classification run).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Classify texts with a trained run: prints each text's label and probability."""
    from finetuneflow import api

    try:
        results = api.predict(project, texts, run)
    except (ValueError, LookupError, RuntimeError, OSError) as err:
        fail(err)
    if as_json:
        for r in results:
            typer.echo(json.dumps({**r, "prob": round(r["prob"], 6)}, ensure_ascii=False))
        return
    table = Table("text", "label", "probability")
    for r in results:
        table.add_row(r["text"][:80], r["label"], f"{r['prob']:.3f}")
    console.print(table)
