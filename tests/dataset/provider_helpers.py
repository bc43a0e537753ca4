"""What the provider tests share: a config against a scripted server, a provider with recorded
backoff, a free port (the fixture clearing API key variables is in conftest.py)."""

from __future__ import annotations

import random
import socket
from typing import Any

from finetuneflow.dataset.provider import Provider, ProviderConfig

KEY = "sk-test-Zq8vW3x9SECRETkey-5f1e2d"


class Waits(list[float]):
    """An injected ``sleep`` that records the backoff instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def config(url: str, **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = dict(
        preset="custom",
        base_url=url,
        model="test-model",
        timeout_s=2.0,
        connect_timeout_s=1.0,
        max_retries=3,
        backoff_s=0.01,
        max_backoff_s=0.05,
    )
    return ProviderConfig(**{**values, **overrides})


def provider(url: str, waits: Waits | None = None, **overrides: Any) -> Provider:
    sleep = waits if waits is not None else Waits()
    return Provider(config(url, **overrides), sleep=sleep, rng=random.Random(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
