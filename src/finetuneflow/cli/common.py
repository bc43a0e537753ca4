"""What every command group shares: the console, one ``fail``, settings from a file plus flags, the
shared option types, and :func:`opt`, which gives a flag the help and default of its config field.

Nothing here imports a step: a config class is named in :data:`CONFIGS` and imported only when a
command's help is shown, so ``ftf --help`` stays free of SQLAlchemy, NumPy and torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from finetuneflow.config import from_dict

T = TypeVar("T")

console = Console()

Project = Annotated[str, typer.Option("--project", "-p", help="Project name (state lives in $FTF_HOME).")]
RunId = Annotated[str | None, typer.Option("--run", "-r", help="Run id (default: the newest finished run).")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="JSON file of settings for this step.")
]

# The settings class of each step, by the name `opt` takes ("module:Class", imported when needed).
CONFIGS = {
    "ingest": "finetuneflow.ingest.config:IngestConfig",
    "dataset": "finetuneflow.dataset.convert:DatasetConfig",
    "generate": "finetuneflow.dataset.generate:GenerateConfig",
    "provider": "finetuneflow.dataset.presets:ProviderConfig",
    "train": "finetuneflow.train.config:TrainConfig",
    "evaluate": "finetuneflow.evaluate.config:EvalConfig",
    "export": "finetuneflow.export.step:ExportConfig",
    "classify": "finetuneflow.classify.config:ClassifyConfig",
    "chat": "finetuneflow.api.chat:ChatSettings",
    "memory": "finetuneflow.memory.config:MemoryConfig",
    "serve": "finetuneflow.serve.config:ServeConfig",
    "jobs": "finetuneflow.jobs.config:JobsConfig",
}
Background = Annotated[
    bool,
    typer.Option("--background", help="Queue it for `ftf worker` and print the job id; don't run it here."),
]
_FIELD = "config field "  # the help an `opt` option carries until `Command` shows the real one


def freed(size: int) -> str:
    """Bytes a delete freed, as people read them (KiB rounded up: a small delete never says 0)."""
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{-(-size // 1024)} KiB"


def fail(err: Exception) -> NoReturn:
    """Print ``error: <err>`` and exit with status 2: the user can fix it, nothing crashed."""
    console.print(f"[red]error:[/red] {escape(str(err))}")
    raise typer.Exit(2)


def enqueue(step: str, project: str, args: dict[str, Any]) -> None:
    """Queue ``step`` as a job (``--background``) and print its id and how to follow it."""
    from finetuneflow import jobs

    try:
        job_id = jobs.submit(step, project, args)
    except (LookupError, ValueError) as err:
        fail(err)
    console.print(
        f"job [bold]{job_id}[/bold] queued ({step}); follow it with `ftf jobs logs {job_id} --follow`"
    )


def settings(cls: type[T], file: Path | None, key: str | None = None, **flags: Any) -> T:
    """Settings ``cls`` from a JSON file, overridden by the flags that were given (not None).

    ``key`` reads the settings from that part of the file (``{"provider": {...}, "generate": {...}}``).
    A flag given as a dict fills a section of ``cls`` (``lora={"r": 8, "dora": None}``): the keys
    given win over the file's one by one, the others keep the file's values.

    Raises:
        ConfigError: every unknown key, wrong type and invalid value at once (a ValueError).
    """
    data: dict[str, Any] = json.loads(file.read_text()) if file else {}
    if key is not None:
        data = data.get(key, {})
    for name, value in flags.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None} or None
            if value is not None and isinstance(data.get(name), dict):
                value = {**data[name], **value}
        if value is not None:
            data[name] = value
    return from_dict(cls, data)


def opt(step: str, field: str, *decls: str, note: str = "", **kwargs: Any) -> Any:
    """``typer.Option(*decls, **kwargs)`` for ``field`` of the settings of ``step`` (a key of
    :data:`CONFIGS`; ``"lora.r"`` reaches into a section). Its help is the field's own help, then
    ``note`` (how the flag differs from the field, e.g. "Comma-separated."), then the field's default
    (:func:`field_help`); :class:`Command` fills it in when help is shown, so the flag cannot drift
    from the config. Use with ``= None``: a flag not given leaves the config file's value.
    """
    if step not in CONFIGS:
        raise KeyError(f"no config named {step!r}; known: {', '.join(CONFIGS)}")
    return typer.Option(*decls, help=f"{_FIELD}{step}:{field}:{note}", **kwargs)


def config_class(step: str) -> type:
    """The settings class of ``step`` (a key of :data:`CONFIGS`), imported now."""
    module, name = CONFIGS[step].split(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def field_help(step: str, field: str, note: str = "") -> str:
    """A config field's help, ``note`` and default, e.g. ``"LoRA rank. (default: 16)"``."""
    cls = config_class(step)
    *sections, name = field.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    factory: Any = found.default_factory  # a list or dict default comes from a factory
    default = found.default if found.default is not dataclasses.MISSING else factory()
    return " ".join(filter(None, (found.metadata["help"], note, f"(default: {shown(default)})")))


def shown(value: Any) -> str:
    """A config default as a user types it: on/off, comma-separated lists, '' for empty."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value) if value != "" else "''"


def field_of(help_text: str | None) -> tuple[str, str, str] | None:
    """(step, field, note) of an option made by :func:`opt`, from its help before it is shown."""
    if not help_text or not help_text.startswith(_FIELD):
        return None
    step, field, note = help_text.removeprefix(_FIELD).split(":", 2)
    return step, field, note


class Command(TyperCommand):
    """A command whose :func:`opt` options get their config field's help when help is shown."""

    # Any: the click that typer uses is vendored as the private typer._click
    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            ref = field_of(getattr(param, "help", None))
            if ref:
                param.help = field_help(*ref)  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)
