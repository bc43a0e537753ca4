"""Provider settings and the known OpenAI-compatible servers: where they listen, which key they need, how hard
to push them.

A preset only fills in what the user left empty (see ``ProviderConfig.resolved``); every value can be
overridden. Local servers get a low default concurrency because one GPU (or CPU) serves every request;
cloud services batch across many machines and take more.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from finetuneflow.config import ENV_NAME, setting

GENERIC_KEY_ENV = "FTF_PROVIDER_API_KEY"  # honoured for every preset, after the preset's own variable
LOCAL_CONCURRENCY = 2
CLOUD_CONCURRENCY = 8


@dataclass(frozen=True)
class Preset:
    """Defaults of one kind of server."""

    base_url: str  # '' = the user must give one
    api_key_env: str  # '' = no key expected (local servers)
    concurrency: int  # 0 = decided from base_url (local or remote host)
    max_tokens_key: str = "max_tokens"  # OpenAI's own API deprecates max_tokens for max_completion_tokens


PRESETS: dict[str, Preset] = {
    "ollama": Preset("http://127.0.0.1:11434/v1", "", LOCAL_CONCURRENCY),
    "ollama-cloud": Preset("https://ollama.com/v1", "OLLAMA_API_KEY", CLOUD_CONCURRENCY),
    "openai": Preset(
        "https://api.openai.com/v1", "OPENAI_API_KEY", CLOUD_CONCURRENCY, "max_completion_tokens"
    ),
    "vllm": Preset("http://127.0.0.1:8000/v1", "", LOCAL_CONCURRENCY),
    "llamacpp": Preset("http://127.0.0.1:8080/v1", "", LOCAL_CONCURRENCY),
    "ftf": Preset("http://127.0.0.1:8765/v1", "", LOCAL_CONCURRENCY),
    "custom": Preset("", "", 0),
}


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (loopback address or 'localhost')."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_concurrency(preset: str, base_url: str) -> int:
    """Requests in flight at once when the user leaves ``concurrency`` at 0."""
    known = PRESETS.get(preset)
    if known and known.concurrency:
        return known.concurrency
    return LOCAL_CONCURRENCY if is_local(base_url) else CLOUD_CONCURRENCY


@dataclass
class ProviderConfig:
    """Which OpenAI-compatible server generates data, and how hard to push it."""

    preset: str = setting("ollama", "Server kind: " + ", ".join(PRESETS) + " (fills the defaults below).")
    base_url: str = setting("", "API root ending in /v1 ('' = the preset's, e.g. http://127.0.0.1:11434/v1).")
    model: str = setting("", "Model name as the server knows it (`ftf provider test` lists them).")
    api_key_env: str = setting(
        "", f"Environment variable holding the API key ('' = the preset's; {GENERIC_KEY_ENV} always works)."
    )
    api_key_file: str = setting("", "File holding the API key (must not be readable by group or others).")
    timeout_s: float = setting(120.0, "Seconds to wait for an answer before retrying.")
    connect_timeout_s: float = setting(5.0, "Seconds to wait for a connection before retrying.")
    concurrency: int = setting(0, "Requests in flight at once (0 = preset's: 2 for local servers, 8 cloud).")
    max_retries: int = setting(4, "Retries of a timed-out, dropped, rate-limited (429) or 5xx request.")
    backoff_s: float = setting(1.0, "First retry waits up to this long; each later one up to twice as long.")
    max_backoff_s: float = setting(30.0, "Longest wait between retries (also caps a server's Retry-After).")
    circuit_failures: int = setting(5, "Calls failed in a row (after retries) that stop all calls (0 = off).")
    temperature: float = setting(0.7, "Sampling temperature of generation calls.")
    max_tokens: int = setting(1024, "Most tokens one answer may have.")

    def problems(self) -> list[str]:
        out = []
        if self.preset not in PRESETS:
            out.append(f"preset: {self.preset!r} is unknown (use one of {', '.join(PRESETS)})")
        if self.preset == "custom" and not self.base_url:
            out.append("base_url: required with preset 'custom' (e.g. http://127.0.0.1:8000/v1)")
        if self.base_url and not re.match(r"https?://[^/\s]+", self.base_url):
            out.append(f"base_url: {self.base_url!r} must start with http:// or https:// and name a host")
        if not self.model.strip():
            out.append("model: required (the name the server knows it by; `ftf provider test` lists them)")
        if self.api_key_env and not ENV_NAME.fullmatch(self.api_key_env):
            # never echo the value: a common slip is pasting the key itself here
            out.append(
                "api_key_env: must be the *name* of an environment variable (letters, digits, '_'), "
                "not the key itself; put the key in that variable or in api_key_file"
            )
        for name in ("timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                out.append(f"{name}: must be > 0 seconds")
        for name in ("concurrency", "max_retries", "backoff_s", "circuit_failures"):
            if getattr(self, name) < 0:
                out.append(f"{name}: must be >= 0")
        if self.max_backoff_s < self.backoff_s:
            out.append("max_backoff_s: must be >= backoff_s")
        if not 0 <= self.temperature <= 2:
            out.append("temperature: must be in [0, 2]")
        if self.max_tokens < 1:
            out.append("max_tokens: must be >= 1")
        return out

    def resolved(self) -> ProviderConfig:
        """A copy with the preset's defaults filled in (base_url, api_key_env, concurrency)."""
        preset = PRESETS.get(self.preset, PRESETS["custom"])
        base_url = (self.base_url or preset.base_url).rstrip("/")
        return dataclasses.replace(
            self,
            base_url=base_url,
            api_key_env=self.api_key_env or preset.api_key_env,
            concurrency=self.concurrency or default_concurrency(self.preset, base_url),
        )
