"""``ftf serve``: a base model and the tuned models of chosen runs behind an OpenAI-compatible API."""

from __future__ import annotations

from typing import Annotated

import typer

from finetuneflow.cli.common import Command, ConfigFile, Project, console, fail, opt, settings


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve", cls=Command)(serve)


def serve(
    project: Project = "default",
    run: Annotated[list[str] | None, opt("serve", "runs", "--run", "-r", note="Repeatable.")] = None,
    base: Annotated[str | None, opt("serve", "base")] = None,
    host: Annotated[str | None, opt("serve", "host")] = None,
    port: Annotated[int | None, opt("serve", "port")] = None,
    api_key_env: Annotated[str | None, opt("serve", "api_key_env")] = None,
    embedder: Annotated[str | None, opt("serve", "embedder")] = None,
    max_request_bytes: Annotated[int | None, opt("serve", "max_request_bytes")] = None,
    batch_size: Annotated[int | None, opt("serve", "model.batch_size")] = None,
    max_tokens: Annotated[int | None, opt("serve", "model.max_tokens")] = None,
    max_prompt_tokens: Annotated[int | None, opt("serve", "model.max_prompt_tokens")] = None,
    device: Annotated[str | None, opt("serve", "model.device")] = None,
    memory: Annotated[
        bool, typer.Option("--memory/--no-memory", help='Let requests ask for memories ({"memory": true}).')
    ] = True,
    config: ConfigFile = None,
) -> None:
    """Serve models over an OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/embeddings."""
    from finetuneflow import api
    from finetuneflow.serve.config import ServeConfig
    from finetuneflow.serve.run import api_key, serve_forever

    model = {"batch_size": batch_size, "max_tokens": max_tokens, "max_prompt_tokens": max_prompt_tokens}
    try:
        cfg = settings(
            ServeConfig, config, runs=run, base=base, host=host, port=port, api_key_env=api_key_env,
            embedder=embedder, max_request_bytes=max_request_bytes, model=model | {"device": device},
        )  # fmt: skip
        key = api_key(cfg)  # refuse an open network bind before loading anything
        server = api.open_server(
            project, cfg.runs, cfg.base or None, cfg.model, embedder=cfg.embedder, memory=memory
        )
    except (ValueError, LookupError) as err:
        fail(err)
    names = ", ".join(m["id"] for m in server.models())
    auth = "clients must send the API key" if key else "loopback only, no API key"
    console.print(f"serving {names} at http://{cfg.host}:{cfg.port}/v1 ({auth})", markup=False)
    serve_forever(server, cfg)
