"""Every flag that sets a config field shows that field's own help and default, read from the
config class when help is shown, so the two cannot drift (``ftf plan --batch-size`` once said 4
while the default was 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from finetuneflow.api.chat import ChatSettings
from finetuneflow.classify.config import ClassifyConfig
from finetuneflow.cli import app, common
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.dataset.generate import GenerateConfig
from finetuneflow.dataset.presets import ProviderConfig
from finetuneflow.evaluate.step import EvalConfig
from finetuneflow.export.step import ExportConfig
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.jobs.config import JobsConfig
from finetuneflow.memory.config import MemoryConfig
from finetuneflow.serve.config import ServeConfig
from finetuneflow.train.config import LoraSettings, TrainConfig

runner = CliRunner()
STEPS = {
    "ingest": IngestConfig,
    "dataset": DatasetConfig,
    "generate": GenerateConfig,
    "provider": ProviderConfig,
    "train": TrainConfig,
    "evaluate": EvalConfig,
    "export": ExportConfig,
    "classify": ClassifyConfig,
    "chat": ChatSettings,
    "memory": MemoryConfig,
    "serve": ServeConfig,
    "jobs": JobsConfig,
}


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path, cmd
    for name, sub in (subs or {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
FIELD_OPTIONS = [
    (path, param.opts[0], ref)
    for path, cmd in COMMANDS
    for param in cmd.params
    if (ref := common.field_of(getattr(param, "help", None)))
]


def _field(step: str, dotted: str) -> dataclasses.Field[Any]:
    cls: Any = STEPS[step]
    *sections, name = dotted.split(".")
    for part in sections:
        cls = typing.get_type_hints(cls)[part]
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _default(field: dataclasses.Field[Any]) -> Any:
    factory: Any = field.default_factory
    return field.default if field.default is not dataclasses.MISSING else factory()


def help_rows(args: list[str]) -> dict[str, str]:
    """`ftf <args> --help` as {first flag: the option's whole row, wrapped lines joined}."""
    result = runner.invoke(app, [*args, "--help"], env={"TERMINAL_WIDTH": "160", "COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows: dict[str, str] = {}
    current = None
    for line in result.output.splitlines():
        line = line.strip()
        if not (line.startswith("│") and line.endswith("│")):
            current = None
            continue
        body = line[1:-1]
        if body.startswith(" -"):  # a new option; wrapped help continues on blank-led lines
            current = body.split()[0]
            rows[current] = ""
        if current:
            rows[current] += " " + body
    return {flag: " ".join(row.split()) for flag, row in rows.items()}


def test_the_commands_have_config_options() -> None:
    assert len(FIELD_OPTIONS) >= 60  # every field-backed flag of ingest ... classify
    assert {ref[0] for _, _, ref in FIELD_OPTIONS} == set(STEPS)
    assert {step: common.config_class(step) for step in common.CONFIGS} == STEPS


@pytest.mark.parametrize(
    ("path", "flag", "ref"), FIELD_OPTIONS, ids=[f"{' '.join(p)} {f}" for p, f, _ in FIELD_OPTIONS]
)
def test_a_config_option_shows_its_fields_help_and_default(
    path: tuple[str, ...], flag: str, ref: tuple[str, str, str]
) -> None:
    step, name, note = ref
    field = _field(step, name)
    row = help_rows(list(path))[flag]
    assert field.metadata["help"] in row
    assert row.endswith(f"(default: {common.shown(_default(field))})")
    assert note in row


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "ftf" for p, _ in COMMANDS])
def test_no_flag_of_a_configured_command_copies_a_field_by_hand(path: tuple[str, ...], cmd: Any) -> None:
    """A command that reads a config file builds its settings from flags made by `opt` only."""
    steps = {ref[0] for p, _, ref in FIELD_OPTIONS if p == path}
    if any("--config" in param.opts for param in cmd.params):
        assert steps, f"ftf {' '.join(path)} has --config but no flag made by opt()"
    fields = {
        f"{f.name}_{sub.name}" if dataclasses.is_dataclass(_default(f)) else f.name
        for step in steps
        for f in dataclasses.fields(STEPS[step])
        for sub in (dataclasses.fields(_default(f)) if dataclasses.is_dataclass(_default(f)) else [f])
    }
    by_hand = [p.name for p in cmd.params if p.name in fields and not common.field_of(p.help)]
    assert not by_hand, f"ftf {' '.join(path)}: use opt() for {by_hand}"


def test_plan_and_train_show_the_real_batch_size_default() -> None:
    for command in ("plan", "train"):
        assert help_rows([command])["--batch-size"].endswith(f"(default: {TrainConfig().batch_size})")


def test_the_help_follows_a_changed_default_and_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """Derived, not copied: change a config field and the flags of every command that use it follow."""
    batch = _field("train", "batch_size")
    monkeypatch.setattr(batch, "default", 7)
    monkeypatch.setattr(batch, "metadata", types.MappingProxyType({"help": "Rows at once, reworded."}))
    rank = {f.name: f for f in dataclasses.fields(LoraSettings)}["r"]
    monkeypatch.setattr(rank, "default", 5)
    formats = {f.name: f for f in dataclasses.fields(ExportConfig)}["formats"]
    monkeypatch.setattr(formats, "default_factory", lambda: ["gguf", "zip"])
    for command in ("plan", "train"):
        assert help_rows([command])["--batch-size"].endswith("Rows at once, reworded. (default: 7)")
    assert help_rows(["train"])["--lora-r"].endswith("LoRA rank. (default: 5)")
    assert help_rows(["classify", "train"])["--lora-r"].endswith("LoRA rank. (default: 5)")
    assert help_rows(["export"])["--format"].endswith("Repeatable. (default: gguf, zip)")


@pytest.mark.parametrize(
    ("value", "text"), [(True, "on"), (False, "off"), (["a", "b"], "a, b"), ("", "''"), (2e-4, "0.0002")]
)
def test_defaults_read_as_a_user_types_them(value: Any, text: str) -> None:
    assert common.shown(value) == text


def test_top_level_help_imports_no_step() -> None:
    """The config classes live in the steps, which import SQLAlchemy and NumPy: only a command's
    own help may import its step."""
    code = (
        "import sys; from finetuneflow.cli import app; from typer.testing import CliRunner;"
        "CliRunner().invoke(app, ['--help']); CliRunner().invoke(app, ['dataset', '--help']);"
        "print(sorted(m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] not in"
        " ('cli', 'config', 'errors') and m.startswith('finetuneflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
