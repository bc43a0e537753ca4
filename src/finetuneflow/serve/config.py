"""``ftf serve``'s settings: where it listens, who may call it, what it serves and its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from finetuneflow.api.serving import ServingSettings
from finetuneflow.config import ENV_NAME, section, setting

DEFAULT_PORT = 8765  # the `ftf` provider preset's (dataset generation by a project's own model)


@dataclass
class ServeConfig:
    """An OpenAI-compatible server of a base model and the adapters of chosen runs."""

    host: str = setting("127.0.0.1", "Address to listen on; any but loopback requires an API key.")
    port: int = setting(DEFAULT_PORT, "TCP port to listen on (the `ftf` provider preset's default).")
    api_key_env: str = setting(
        "FTF_SERVE_API_KEY", "Environment variable holding the API key clients send as a Bearer token."
    )
    runs: list[str] = setting([], "Runs whose tuned models are served, by id ([] = the newest run).")
    base: str = setting("", "Base model to serve ('' = the runs' base; needed when no run is given).")
    embedder: str = setting("", "Embedding model of /v1/embeddings ('' = none; e.g. all-MiniLM-L6-v2).")
    max_request_bytes: int = setting(1_000_000, "Largest request body in bytes; bigger ones get 413.")
    model: ServingSettings = section(ServingSettings, "How the served models answer and the request limits.")

    def problems(self) -> list[str]:
        out = [f"model.{p}" for p in self.model.problems()]
        if not 0 < self.port < 65536:
            out.append("port: must be 1-65535")
        if not ENV_NAME.fullmatch(self.api_key_env):
            out.append(f"api_key_env: {self.api_key_env!r} is not an environment variable name")
        if self.max_request_bytes < 1024:
            out.append("max_request_bytes: must be >= 1024")
        return out


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
