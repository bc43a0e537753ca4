"""``ftf provider test``: check an OpenAI-compatible server before generating data with it.

The provider flags are shared with ``ftf dataset generate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finetuneflow.cli.common import Command, ConfigFile, console, fail, opt, settings

Preset = Annotated[str | None, opt("provider", "preset")]
BaseUrl = Annotated[str | None, opt("provider", "base_url")]
Model = Annotated[str | None, opt("provider", "model", "--model", "-m")]
KeyEnv = Annotated[str | None, opt("provider", "api_key_env")]
KeyFile = Annotated[Path | None, opt("provider", "api_key_file")]
Concurrency = Annotated[int | None, opt("provider", "concurrency")]

provider_app = typer.Typer(help="Check an OpenAI-compatible LLM provider.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``provider`` command group to ``app``."""
    app.add_typer(provider_app, name="provider")


@provider_app.command("test", cls=Command)
def provider_test(
    preset: Preset = None,
    base_url: BaseUrl = None,
    model: Model = None,
    api_key_env: KeyEnv = None,
    api_key_file: KeyFile = None,
    config: ConfigFile = None,
) -> None:
    """Check a provider: list its models and make one tiny chat request."""
    from finetuneflow.dataset.presets import ProviderConfig
    from finetuneflow.dataset.provider_check import check_provider

    try:
        cfg = settings(
            ProviderConfig, config, "provider", preset=preset, base_url=base_url, model=model,
            api_key_env=api_key_env, api_key_file=path_text(api_key_file),
        )  # fmt: skip
        result = check_provider(cfg)
    except (ValueError, LookupError) as err:
        fail(err)
    console.print_json(data=result)
    if not result["ok"]:
        raise typer.Exit(1)


def path_text(path: Path | None) -> str | None:
    """A path flag as the string a config field holds (None when not given)."""
    return str(path) if path else None
