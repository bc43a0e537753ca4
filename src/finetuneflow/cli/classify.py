"""``ftf classify train`` and ``ftf classify predict``: thin wrappers over :mod:`finetuneflow.classify`.

torch, transformers and peft are imported inside the commands only, so ``ftf --help`` stays fast.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli.common import Command, console, fail, opt, settings


def register(app: typer.Typer) -> None:
    """Add the ``classify`` command group to ``app``."""
    group = typer.Typer(
        help="Sequence classification: LoRA on a labelled CSV (text, label), scored by accuracy and F1.",
        no_args_is_help=True,
    )
    group.command("train", cls=Command)(classify_train)
    group.command("predict")(classify_predict)
    app.add_typer(group, name="classify")


def new_run_dir(project: str) -> Path:
    """A fresh folder under the project's runs/, named like the causal runs but marked as classify."""
    from finetuneflow import paths

    run_id = "classify-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    return paths.project_dir(project) / "runs" / run_id


def classify_train(
    csv_file: Annotated[Path, typer.Argument(help="Labelled CSV/TSV with a header row.", metavar="CSV")],
    model: Annotated[str | None, opt("classify", "base_model", "--model")] = None,
    eval_csv: Annotated[
        Path | None, typer.Option(help="Separate labelled eval file (default: a stratified split).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: $FTF_HOME/projects/<project>/runs/<id>).")
    ] = None,
    project: Annotated[
        str, typer.Option("--project", "-p", help="Project whose runs/ holds it.")
    ] = "default",
    text_column: Annotated[str | None, opt("classify", "text_column")] = None,
    label_column: Annotated[str | None, opt("classify", "label_column")] = None,
    eval_fraction: Annotated[float | None, opt("classify", "eval_fraction")] = None,
    epochs: Annotated[float | None, opt("classify", "epochs")] = None,
    max_steps: Annotated[int | None, opt("classify", "max_steps")] = None,
    learning_rate: Annotated[float | None, opt("classify", "learning_rate", "--lr")] = None,
    batch_size: Annotated[int | None, opt("classify", "batch_size")] = None,
    max_len: Annotated[int | None, opt("classify", "max_len")] = None,
    lora_r: Annotated[int | None, opt("classify", "lora.r")] = None,
    threads: Annotated[int | None, opt("classify", "threads")] = None,
    precision: Annotated[str | None, opt("classify", "precision")] = None,
    seed: Annotated[int | None, opt("classify", "seed")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="JSON file of ClassifyConfig settings.")
    ] = None,
) -> None:
    """Train a classifier of the CSV's labels; prints accuracy, macro-F1 and the run folder."""
    from finetuneflow.classify.config import ClassifyConfig
    from finetuneflow.classify.step import train as train_classifier
    from finetuneflow.cli.progress import RichProgress

    try:
        cfg = settings(
            ClassifyConfig, config, base_model=model, text_column=text_column, label_column=label_column,
            eval_fraction=eval_fraction, epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
            batch_size=batch_size, max_len=max_len, lora={"r": lora_r}, threads=threads,
            precision=precision, seed=seed,
        )  # fmt: skip
        run_dir = out or new_run_dir(project)
        with RichProgress() as sink:
            summary = train_classifier(csv_file, run_dir, cfg, sink, eval_csv)
    except (ValueError, LookupError, RuntimeError, OSError) as err:
        fail(err)
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    result, base = summary["eval"], summary["majority_baseline"]
    console.print(
        f"accuracy [bold]{result['accuracy']:.3f}[/bold] (majority baseline {base['accuracy']:.3f}, "
        f"always {base['label']!r}), macro-F1 [bold]{result['macro_f1']:.3f}[/bold] on "
        f"{result['examples']} eval examples after {summary['steps']} steps"
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
    run_dir: Annotated[Path, typer.Argument(help="Folder of a finished `ftf classify train` run.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Classify texts with a trained run: prints each text's label and probability."""
    from finetuneflow.classify.predict import predict

    try:
        results = predict(run_dir, texts)
    except (ValueError, LookupError, RuntimeError, OSError) as err:
        fail(err)
    if as_json:
        for text, (label, prob) in zip(texts, results, strict=True):
            typer.echo(json.dumps({"text": text, "label": label, "prob": round(prob, 6)}, ensure_ascii=False))
        return
    table = Table("text", "label", "probability")
    for text, (label, prob) in zip(texts, results, strict=True):
        table.add_row(text[:80], label, f"{prob:.3f}")
    console.print(table)
