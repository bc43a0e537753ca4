"""Provider settings: every problem reported at once, the presets, and ``ftf provider test``'s
check against a scripted server."""

from __future__ import annotations

import json

import pytest
from llm_server import ScriptedServer

from finetuneflow.config import from_dict
from finetuneflow.dataset.presets import PRESETS
from finetuneflow.dataset.provider import Provider, ProviderConfig
from finetuneflow.dataset.provider_check import check_provider
from finetuneflow.errors import ConfigError

from .provider_helpers import KEY, config, free_port


@pytest.fixture(autouse=True)
def _no_keys(no_keys: None) -> None:
    """No API key variables from the machine running the tests."""


def test_config_problems_are_all_reported() -> None:
    bad = ProviderConfig(
        preset="nope",
        base_url="ftp://x",
        model="",
        api_key_env=KEY,
        timeout_s=0,
        connect_timeout_s=-1,
        concurrency=-1,
        max_retries=-1,
        backoff_s=2.0,
        max_backoff_s=1.0,
        circuit_failures=-1,
        temperature=3.0,
        max_tokens=0,
    )
    problems = bad.problems()
    keys = [p.split(":")[0] for p in problems]
    assert keys == [
        "preset",
        "base_url",
        "model",
        "api_key_env",
        "timeout_s",
        "connect_timeout_s",
        "concurrency",
        "max_retries",
        "circuit_failures",
        "max_backoff_s",
        "temperature",
        "max_tokens",
    ]
    assert not [p for p in problems if KEY in p]  # a key pasted into api_key_env is not echoed
    with pytest.raises(ConfigError) as info:
        from_dict(ProviderConfig, {"preset": "custom", "model": "m"})
    assert info.value.errors == ["base_url: required with preset 'custom' (e.g. http://127.0.0.1:8000/v1)"]
    with pytest.raises(ConfigError):
        Provider(bad)
    assert ProviderConfig(model="m").problems() == []


@pytest.mark.parametrize(
    "preset, url, env, concurrency",
    [
        ("ollama", "http://127.0.0.1:11434/v1", "", 2),
        ("ollama-cloud", "https://ollama.com/v1", "OLLAMA_API_KEY", 8),
        ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", 8),
        ("vllm", "http://127.0.0.1:8000/v1", "", 2),
        ("llamacpp", "http://127.0.0.1:8080/v1", "", 2),
        ("ftf", "http://127.0.0.1:8765/v1", "", 2),
    ],
)
def test_presets_resolve(preset: str, url: str, env: str, concurrency: int) -> None:
    cfg = ProviderConfig(preset=preset, model="m").resolved()
    assert (cfg.base_url, cfg.api_key_env, cfg.concurrency) == (url, env, concurrency)
    given = ProviderConfig(preset=preset, model="m", base_url=url + "/", concurrency=5).resolved()
    assert (given.base_url, given.concurrency) == (url, 5)


def test_custom_preset_concurrency_follows_the_host() -> None:
    assert set(PRESETS) == {"ollama", "ollama-cloud", "openai", "vllm", "llamacpp", "ftf", "custom"}
    local = ProviderConfig(preset="custom", model="m", base_url="http://localhost:9000/v1").resolved()
    remote = ProviderConfig(preset="custom", model="m", base_url="https://llm.example.com/v1").resolved()
    assert (local.concurrency, remote.concurrency, remote.api_key_env) == (2, 8, "")


# -- check_provider --------------------------------------------------------------------------------------


def test_check_provider_happy_path() -> None:
    with ScriptedServer(models=("m1", "m2")) as srv:
        report = check_provider(config(srv.url, model="m2"))
    assert report["ok"] and report["error"] is None and report["model_found"]
    assert report["models"] == ["m1", "m2"] and report["reply"].startswith("echo:")
    assert report["chat_seconds"] >= 0 and report["list_seconds"] >= 0
    json.dumps(report)


def test_check_provider_model_missing() -> None:
    with ScriptedServer(models=("m1",)) as srv:
        report = check_provider(config(srv.url, model="llama3"))
        assert srv.chat_requests == []
    assert not report["ok"] and report["model_found"] is False
    assert "'llama3'" in report["error"] and "m1" in report["error"]


def test_check_provider_server_down() -> None:
    report = check_provider(config(f"http://127.0.0.1:{free_port()}/v1"))
    assert not report["ok"] and "connection failed" in report["error"]


# -- the scripted server itself ------------------------------------------------------------------------
