"""``ftf dataset build | generate | review ...``: build a dataset, write one with an LLM, review it."""

from __future__ import annotations

from collections.abc import Callable
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
from finetuneflow.cli.provider import BaseUrl, Concurrency, KeyEnv, KeyFile, Model, Preset, path_text
from finetuneflow.config import to_dict

dataset_app = typer.Typer(help="Build and inspect datasets.", no_args_is_help=True)
review_app = typer.Typer(help="List, search, edit, delete, approve and rate examples.", no_args_is_help=True)
dataset_app.add_typer(review_app, name="review")

Name = Annotated[str, typer.Option("--name", "-n", help="Dataset name.")]
NewName = Annotated[str | None, opt("dataset", "name", "--name", "-n")]
Domain = Annotated[str | None, opt("dataset", "domain")]
SystemPrompt = Annotated[str | None, opt("dataset", "system_prompt")]
Formats = Annotated[list[str] | None, opt("dataset", "formats", "--format", "-f", note="Repeatable.")]


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` command group (with ``dataset review``) to ``app``."""
    app.add_typer(dataset_app, name="dataset")


@dataset_app.command("build", cls=Command)
def dataset_build(
    project: Project = "default",
    name: NewName = None,
    eval_fraction: Annotated[float | None, opt("dataset", "eval_fraction")] = None,
    seed: Annotated[int | None, opt("dataset", "seed")] = None,
    system_prompt: SystemPrompt = None,
    domain: Domain = None,
    scrub_pii: Annotated[bool | None, opt("dataset", "scrub_pii", "--scrub-pii/--keep-pii")] = None,
    min_rating: Annotated[int | None, opt("dataset", "min_rating")] = None,
    fmt: Formats = None,
    config: ConfigFile = None,
    background: Background = False,
) -> None:
    """Turn chunks and reviewed examples into train/eval/heldout JSONL plus export formats."""
    from finetuneflow import api
    from finetuneflow.dataset.convert import DatasetConfig

    try:
        cfg = settings(
            DatasetConfig, config, name=name, eval_fraction=eval_fraction, seed=seed,
            system_prompt=system_prompt, domain=domain, scrub_pii=scrub_pii, min_rating=min_rating,
            formats=fmt,
        )  # fmt: skip
        if background:
            return enqueue("dataset", project, {"config": to_dict(cfg)})
        manifest = api.build_dataset(project, cfg)
    except (ValueError, LookupError) as err:
        fail(err)
    _print_build(manifest)


def _print_build(manifest: dict[str, Any]) -> None:
    from finetuneflow.dataset.stats import format_stats

    console.print(f"dataset [bold]{manifest['name']}[/bold] in {manifest['path']}")
    console.print(format_stats(manifest["stats"]), markup=False, highlight=False)
    console.print_json(data={"counts": manifest["counts"], "pii_replaced": manifest["pii_replaced"]})


@dataset_app.command("generate", cls=Command)
def dataset_generate(
    project: Project = "default",
    name: NewName = None,
    preset: Preset = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key_env: KeyEnv = None,
    api_key_file: KeyFile = None,
    concurrency: Concurrency = None,
    per_chunk: Annotated[int | None, opt("generate", "examples_per_chunk", "--per-chunk")] = None,
    judge: Annotated[bool | None, opt("generate", "judge", "--judge/--no-judge")] = None,
    follow_up: Annotated[bool | None, opt("generate", "follow_up", "--follow-up/--single-turn")] = None,
    max_chunks: Annotated[int | None, opt("generate", "max_chunks")] = None,
    paraphrases: Annotated[int | None, opt("generate", "paraphrases")] = None,
    answer_variants: Annotated[int | None, opt("generate", "answer_variants")] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="A few representative chunks only; no build.")
    ] = False,
    domain: Domain = None,
    system_prompt: SystemPrompt = None,
    fmt: Formats = None,
    config: ConfigFile = None,
    background: Background = False,
) -> None:
    """Write Q&A examples from your documents with an LLM, then build the dataset. Rerun to resume.

    The config file may hold "provider", "generate" and "dataset" sections.
    """
    from finetuneflow import api
    from finetuneflow.cli.progress import RichProgress
    from finetuneflow.dataset.convert import DatasetConfig
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.dataset.presets import ProviderConfig

    try:
        prov = settings(
            ProviderConfig, config, "provider", preset=preset, base_url=base_url, model=model,
            api_key_env=api_key_env, api_key_file=path_text(api_key_file), concurrency=concurrency,
        )  # fmt: skip
        gen = settings(
            GenerateConfig, config, "generate",
            examples_per_chunk=per_chunk, judge=judge, follow_up=follow_up, max_chunks=max_chunks,
            paraphrases=paraphrases, answer_variants=answer_variants,
        )  # fmt: skip
        ds = settings(
            DatasetConfig, config, "dataset", name=name, domain=domain, system_prompt=system_prompt,
            formats=fmt,
        )  # fmt: skip
        if background:
            args = {
                "provider": to_dict(prov),
                "generate": to_dict(gen),
                "config": to_dict(ds),
                "preview": preview,
            }
            return enqueue("generate", project, args)
        with RichProgress(console) as progress:
            out = api.generate_dataset(project, prov, gen, ds, progress, preview=preview)
    except (ValueError, LookupError, RuntimeError) as err:
        fail(err)
    report = out["generation"]
    if preview:
        for ex in report.examples:
            console.rule(ex["source"])
            for m in ex["messages"]:
                console.print(f"[bold]{m['role']}:[/bold] {m['content']}", highlight=False)
    console.print_json(data=report.to_json())
    if report.stopped:
        console.print(f"[red]stopped:[/red] {report.stopped}\nrerun the same command to resume")
    if "manifest" in out:
        _print_build(out["manifest"])
    if report.stopped:
        raise typer.Exit(1)


@dataset_app.command("from-chats")
def dataset_from_chats(
    project: Project = "default",
    name: Name = "default",
    min_rating: Annotated[
        int, typer.Option(help="Uncorrected answers rated at least this (1-5) become examples.")
    ] = 4,
) -> None:
    """Corrected and well-rated chat answers become examples in the pool (review them, then
    `ftf dataset build` and `ftf train`); corrections also become DPO preference pairs."""
    from finetuneflow import api

    try:
        report = api.dataset_from_chats(project, name, min_rating)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print_json(data=report)
    console.print(
        f"review them: ftf dataset review list -p {project} -n {name} --origin chat; "
        f"then: ftf dataset build -p {project} -n {name}",
        markup=False,
        highlight=False,
    )


@review_app.command("list")
def review_list(
    project: Project = "default",
    name: Name = "default",
    status: Annotated[str | None, typer.Option(help="new | approved | rejected | deleted")] = None,
    origin: Annotated[str | None, typer.Option(help="converter | llm | chat")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Text in the question or answer.")
    ] = None,
    min_rating: Annotated[int | None, typer.Option(help="Only rated >= this.")] = None,
    limit: int = 20,
    offset: int = 0,
) -> None:
    """List examples (newest review state), with search and filters."""
    from finetuneflow.dataset import review

    try:
        page = review.list_examples(
            project, name, status=status, origin=origin, search=search, min_rating=min_rating,
            limit=limit, offset=offset,
        )  # fmt: skip
    except (ValueError, LookupError) as err:
        fail(err)
    table = Table("id", "status", "rating", "origin", "question", "answer", title=f"{page.total} examples")
    for item in page.items:
        q, a = (item["question"] or item["text"] or "")[:60], (item["answer"] or "")[:60]
        table.add_row(str(item["id"]), item["status"], str(item["rating"] or ""), item["origin"], q, a)
    console.print(table)


@review_app.command("show")
def review_show(example_id: int, project: Project = "default", name: Name = "default") -> None:
    """Show one example in full."""
    from finetuneflow.dataset import review

    _run(lambda: review.get_example(project, name, example_id))


@review_app.command("edit")
def review_edit(
    example_id: int,
    project: Project = "default",
    name: Name = "default",
    question: Annotated[str | None, typer.Option(help="New question.")] = None,
    answer: Annotated[str | None, typer.Option(help="New answer.")] = None,
) -> None:
    """Change an example's question and/or answer (the old version is kept in its history)."""
    from finetuneflow.dataset import review

    _run(lambda: review.edit_example(project, name, example_id, question=question, answer=answer))


@review_app.command("delete")
def review_delete(example_id: int, project: Project = "default", name: Name = "default") -> None:
    """Leave an example out of builds (restorable with `restore`)."""
    from finetuneflow.dataset import review

    _run(lambda: review.delete_example(project, name, example_id))


@review_app.command("restore")
def review_restore(example_id: int, project: Project = "default", name: Name = "default") -> None:
    """Bring a deleted or rejected example back."""
    from finetuneflow.dataset import review

    _run(lambda: review.restore_example(project, name, example_id))


@review_app.command("approve")
def review_approve(example_ids: list[int], project: Project = "default", name: Name = "default") -> None:
    """Approve examples (approval does not lift a low rating: `--min-rating` still applies)."""
    from finetuneflow.dataset import review

    _run(lambda: {"approved": review.approve_examples(project, name, example_ids)})


@review_app.command("rate")
def review_rate(example_id: int, rating: int, project: Project = "default", name: Name = "default") -> None:
    """Rate an example 1-5 (exports can filter with --min-rating)."""
    from finetuneflow.dataset import review

    _run(lambda: review.rate_example(project, name, example_id, rating))


def _run(action: Callable[[], Any]) -> None:
    try:
        result = action()
    except (ValueError, LookupError) as err:
        fail(err)
    console.print_json(data=result)
