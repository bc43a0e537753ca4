"""Starting the server: in the foreground for ``ftf serve``, or on a thread (tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from finetuneflow.api.serving import ModelServer
from finetuneflow.errors import ConfigError
from finetuneflow.serve.app import create_app
from finetuneflow.serve.config import ServeConfig, is_loopback


def api_key(cfg: ServeConfig) -> str | None:
    """The API key clients must send (from ``cfg.api_key_env``), or None on loopback without one.

    Raises:
        ConfigError: the host is not loopback and no key is set (refuse to serve the network openly).
    """
    key = os.environ.get(cfg.api_key_env, "").strip() or None
    if key is None and not is_loopback(cfg.host):
        raise ConfigError(
            [
                f"host: {cfg.host!r} is reachable from other machines; set an API key in ${cfg.api_key_env} "
                "(clients send it as a Bearer token), or serve on 127.0.0.1"
            ],
            "serve settings",
        )
    return key


def uvicorn_server(server: ModelServer, cfg: ServeConfig, key: str | None, log_level: str = "info") -> Any:
    import uvicorn

    app = create_app(server, cfg.max_request_bytes, key, cfg.host)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=True)
    return uvicorn.Server(config)


def serve_forever(server: ModelServer, cfg: ServeConfig) -> None:
    """Serve until interrupted (the key was checked by :func:`api_key` before the model loaded)."""
    try:
        uvicorn_server(server, cfg, api_key(cfg)).run()
    finally:
        server.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Background:
    """A server running on a thread of this process: ``url`` ends in /v1; ``stop()`` ends it."""

    uvicorn: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


def start_background(server: ModelServer, cfg: ServeConfig) -> Background:
    """Start serving ``server`` on a thread (port 0 in ``cfg``: a free one) and wait until it listens."""
    import dataclasses

    if cfg.port == 0:
        cfg = dataclasses.replace(cfg, port=free_port(cfg.host))
    runner = uvicorn_server(server, cfg, api_key(cfg), log_level="warning")
    thread = threading.Thread(target=runner.run, name="ftf-serve-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {cfg.host}:{cfg.port}")
        time.sleep(0.02)
    return Background(runner, thread, f"http://{cfg.host}:{cfg.port}/v1")
