"""``ftf ui``: the studio in the browser, with a job worker beside it."""

from __future__ import annotations

from typing import Annotated

import typer

from finetuneflow.cli.common import Command, console, fail


def register(app: typer.Typer) -> None:
    """Add ``ui`` to ``app``."""
    app.command("ui", cls=Command)(ui)


def ui(
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but loopback needs an API token (FTF_WEB_TOKEN).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the studio.")] = 8770,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker", help="Run a local job worker too (off: `ftf worker` runs elsewhere)."
        ),
    ] = True,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the studio in a browser.")
    ] = True,
) -> None:
    """Start the studio (web wizard and REST API) and a local worker; Ctrl-C stops both."""
    from finetuneflow.config import from_dict
    from finetuneflow.web.config import WebConfig
    from finetuneflow.web.studio import create_studio_app, run_studio

    try:  # settings and the token rule are checked before anything starts
        cfg = from_dict(WebConfig, {"host": host, "port": port}, "studio settings")
        app = create_studio_app(cfg)
    except ValueError as err:
        fail(err)
    where = "a local worker runs the jobs" if worker else "jobs wait for an `ftf worker`"
    console.print(f"studio at http://{cfg.host}:{cfg.port}/ ({where}); Ctrl-C stops it", markup=False)
    if app.state.api_token is not None:
        console.print(
            f"a token is needed: browsers log in at /ui/login with the value of ${cfg.token_env}; API "
            f"clients send 'Authorization: Bearer <token>'",
            markup=False,
        )
    run_studio(app, cfg, worker=worker, open_browser=open_browser)
