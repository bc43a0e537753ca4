"""``ftf dataset ...`` and ``ftf provider ...``: build, generate with an LLM, review, check a provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finetuneflow.cli import ConfigFile, Project, _fail, _settings, app, console, dataset_app

provider_app = typer.Typer(help="Check an OpenAI-compatible LLM provider.", no_args_is_help=True)
review_app = typer.Typer(help="List, search, edit, delete, approve and rate examples.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
dataset_app.add_typer(review_app, name="review")

Name = Annotated[str, typer.Option("--name", "-n", help="Dataset name.")]
Preset = Annotated[
    str | None, typer.Option(help="ollama | ollama-cloud | openai | vllm | llamacpp | ftf | custom (ollama).")
]
BaseUrl = Annotated[str | None, typer.Option(help="Server URL ending in /v1 (default: the preset's).")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Model name on the server.")]
KeyEnv = Annotated[str | None, typer.Option(help="Environment variable holding the API key.")]
KeyFile = Annotated[Path | None, typer.Option(help="File holding the API key (chmod 600).")]
Concurrency = Annotated[int | None, typer.Option(help="Requests in flight at once (2 local, 8 cloud).")]
Formats = Annotated[
    list[str] | None,
    typer.Option("--format", "-f", help="Export format, repeatable (messages, openai, ...)."),
]


def _provider(
    file: Path | None, preset: str | None, base_url: str | None, model: str | None, **more: Any
) -> Any:
    from finetuneflow.dataset.presets import ProviderConfig

    data: dict[str, Any] = json.loads(file.read_text()).get("provider", {}) if file else {}
    flags = dict(preset=preset, base_url=base_url, model=model, **more)
    return _settings(ProviderConfig, None, **{**data, **{k: v for k, v in flags.items() if v is not None}})


def _section(cls: type, file: Path | None, key: str, **flags: Any) -> Any:
    data: dict[str, Any] = json.loads(file.read_text()).get(key, {}) if file else {}
    return _settings(cls, None, **{**data, **{k: v for k, v in flags.items() if v is not None}})


@provider_app.command("test")
def provider_test(
    preset: Preset = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key_env: KeyEnv = None,
    api_key_file: KeyFile = None,
    config: ConfigFile = None,
) -> None:
    """Check a provider: list its models and make one tiny chat request."""
    from finetuneflow.dataset.provider_check import check_provider

    try:
        cfg = _provider(
            config, preset, base_url, model, api_key_env=api_key_env, api_key_file=_s(api_key_file)
        )
        result = check_provider(cfg)
    except (ValueError, LookupError) as err:
        _fail(err)
    console.print_json(data=result)
    if not result["ok"]:
        raise typer.Exit(1)


def _s(path: Path | None) -> str | None:
    return str(path) if path else None


@dataset_app.command("build")
def dataset_build(
    project: Project = "default",
    name: Annotated[str | None, typer.Option("--name", "-n", help="Dataset name (default).")] = None,
    eval_fraction: Annotated[
        float | None, typer.Option(help="Share of chat examples held out (0.15).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (42).")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System message added to chat examples.")] = None,
    domain: Annotated[str | None, typer.Option(help="Only chunks of this domain.")] = None,
    scrub_pii: Annotated[bool | None, typer.Option("--scrub-pii/--keep-pii", help="Scrub PII (on).")] = None,
    min_rating: Annotated[int | None, typer.Option(help="Only examples rated >= this or approved.")] = None,
    fmt: Formats = None,
    config: ConfigFile = None,
) -> None:
    """Turn chunks and reviewed examples into train/eval/heldout JSONL plus export formats."""
    from finetuneflow import api
    from finetuneflow.dataset.convert import DatasetConfig

    try:
        cfg = _settings(
            DatasetConfig,
            config,
            name=name,
            eval_fraction=eval_fraction,
            seed=seed,
            system_prompt=system_prompt,
            domain=domain,
            scrub_pii=scrub_pii,
            min_rating=min_rating,
            formats=fmt,
        )
        manifest = api.build_dataset(project, cfg)
    except (ValueError, LookupError) as err:
        _fail(err)
    _print_build(manifest)


def _print_build(manifest: dict[str, Any]) -> None:
    from finetuneflow.dataset.stats import format_stats

    console.print(f"dataset [bold]{manifest['name']}[/bold] in {manifest['path']}")
    console.print(format_stats(manifest["stats"]), markup=False, highlight=False)
    console.print_json(data={"counts": manifest["counts"], "pii_replaced": manifest["pii_replaced"]})


@dataset_app.command("generate")
def dataset_generate(
    project: Project = "default",
    name: Annotated[str | None, typer.Option("--name", "-n", help="Dataset name (default).")] = None,
    preset: Preset = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key_env: KeyEnv = None,
    api_key_file: KeyFile = None,
    concurrency: Concurrency = None,
    per_chunk: Annotated[int | None, typer.Option(help="Pairs per chunk (0 = scaled to length).")] = None,
    judge: Annotated[
        bool | None, typer.Option("--judge/--no-judge", help="Score pairs with an LLM judge.")
    ] = None,
    follow_up: Annotated[
        bool | None, typer.Option("--follow-up/--single-turn", help="Two-turn chats.")
    ] = None,
    max_chunks: Annotated[int | None, typer.Option(help="Only the first N chunks (0 = all).")] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="A few representative chunks only; no build.")
    ] = False,
    domain: Annotated[str | None, typer.Option(help="Only chunks of this domain.")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System message of the examples.")] = None,
    fmt: Formats = None,
    config: ConfigFile = None,
) -> None:
    """Write Q&A examples from your documents with an LLM, then build the dataset. Rerun to resume.

    The config file may hold "provider", "generate" and "dataset" sections.
    """
    from finetuneflow import api
    from finetuneflow.dataset.convert import DatasetConfig
    from finetuneflow.dataset.generate import GenerateConfig
    from finetuneflow.progress import RichProgress

    try:
        prov = _provider(
            config, preset, base_url, model,
            api_key_env=api_key_env, api_key_file=_s(api_key_file), concurrency=concurrency,
        )  # fmt: skip
        gen = _section(
            GenerateConfig, config, "generate",
            examples_per_chunk=per_chunk, judge=judge, follow_up=follow_up, max_chunks=max_chunks,
        )  # fmt: skip
        ds = _section(
            DatasetConfig,
            config,
            "dataset",
            name=name,
            domain=domain,
            system_prompt=system_prompt,
            formats=fmt,
        )
        with RichProgress(console) as progress:
            out = api.generate_dataset(project, prov, gen, ds, progress, preview=preview)
    except (ValueError, LookupError, RuntimeError) as err:
        _fail(err)
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


@review_app.command("list")
def review_list(
    project: Project = "default",
    name: Name = "default",
    status: Annotated[str | None, typer.Option(help="new | approved | rejected | deleted")] = None,
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
            project, name, status=status, search=search, min_rating=min_rating, limit=limit, offset=offset
        )
    except (ValueError, LookupError) as err:
        _fail(err)
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
    """Approve examples (they pass any rating filter)."""
    from finetuneflow.dataset import review

    _run(lambda: {"approved": review.approve_examples(project, name, example_ids)})


@review_app.command("rate")
def review_rate(example_id: int, rating: int, project: Project = "default", name: Name = "default") -> None:
    """Rate an example 1-5 (exports can filter with --min-rating)."""
    from finetuneflow.dataset import review

    _run(lambda: review.rate_example(project, name, example_id, rating))


def _run(action: Any) -> None:
    try:
        result = action()
    except (ValueError, LookupError) as err:
        _fail(err)
    console.print_json(data=result)
