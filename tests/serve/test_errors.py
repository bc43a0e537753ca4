"""Every refusal in OpenAI's error shape, with the status and code a client can act on; the API key
required off loopback, checked on every /v1 call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve.conftest import RUN, Live, start

SHAPE = {"message", "type", "param", "code"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == SHAPE, body
    return dict(body["error"])


def post(live: Live, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{live.url}/chat/completions", json=body, timeout=30, **kwargs)


def test_an_unknown_model_is_404_model_not_found(live: Live) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        live.client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and "nope" in caught.value.message
    assert error_of(caught.value.response)["param"] == "model"


def test_a_too_long_prompt_is_context_length_exceeded(live: Live) -> None:
    long = " ".join(["printer"] * 400)  # over the fixture's 200-token prompt limit
    with pytest.raises(openai.BadRequestError) as caught:
        live.client.chat.completions.create(model=RUN, messages=[{"role": "user", "content": long}])
    assert caught.value.code == "context_length_exceeded"
    assert error_of(caught.value.response)["param"] == "messages"


def test_max_tokens_over_the_cap_and_n_over_one_are_refused(live: Live) -> None:
    ask = [{"role": "user", "content": "hi"}]
    for extra, param in (({"max_tokens": 65}, "max_tokens"), ({"n": 2}, "n"), ({"top_p": 0}, "top_p")):
        response = post(live, {"model": RUN, "messages": ask} | extra)
        assert response.status_code == 400
        assert error_of(response)["param"] == param


def test_bad_json_and_a_missing_field_are_400(live: Live) -> None:
    bad = httpx.post(
        f"{live.url}/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_json"
    missing = post(live, {"model": RUN})
    assert missing.status_code == 400 and error_of(missing)["param"] == "messages"


def test_an_oversize_body_is_413_declared_or_chunked(live: Live) -> None:
    big = {"model": RUN, "messages": [{"role": "user", "content": "x" * 70_000}]}  # limit: 64 kB
    response = post(live, big)
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"

    def chunks() -> Any:  # no content-length: the limit is found while reading
        yield b'{"model": "tiny-run", "messages": [{"role": "user", "content": "'
        for _ in range(70):
            yield b"x" * 1000
        yield b'"}]}'

    chunked = httpx.post(f"{live.url}/chat/completions", content=chunks(), timeout=30)
    assert chunked.status_code == 413 and error_of(chunked)["code"] == "request_too_large"


def test_an_unknown_path_is_404_in_the_same_shape(live: Live) -> None:
    response = httpx.get(f"{live.url}/nothing-here")
    assert response.status_code == 404 and error_of(response)["type"] == "not_found_error"


def test_memory_asked_of_a_server_without_it_says_so(live: Live) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        live.client.chat.completions.create(
            model=RUN, messages=[{"role": "user", "content": "hi"}], extra_body={"memory": True}
        )
    assert error_of(caught.value.response)["message"] == "memory is not installed in this build"
    assert caught.value.code == "memory_unavailable"


def test_off_loopback_the_server_refuses_to_start_without_a_key(
    tiny_tuned_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.errors import ConfigError
    from finetuneflow.serve.config import ServeConfig
    from finetuneflow.serve.run import api_key

    monkeypatch.delenv("FTF_SERVE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="FTF_SERVE_API_KEY"):
        api_key(ServeConfig(host="0.0.0.0"))
    assert api_key(ServeConfig(host="127.0.0.1")) is None
    monkeypatch.setenv("FTF_SERVE_API_KEY", "s3cret")
    assert api_key(ServeConfig(host="0.0.0.0")) == "s3cret"


def test_with_a_key_every_v1_call_needs_it(tiny_tuned_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SERVE_KEY", "s3cret-key")
    server, background = start(tiny_tuned_run, host="0.0.0.0", key_env="TEST_SERVE_KEY")
    url = background.url.replace("0.0.0.0", "127.0.0.1")
    try:
        for key in ("wrong", "s3cret-ke", "s3cret-key-longer"):
            client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                client.models.list()
            assert caught.value.code == "invalid_api_key"
        assert httpx.get(f"{url}/models").status_code == 401  # no header at all
        good = openai.OpenAI(base_url=url, api_key="s3cret-key", max_retries=0)
        assert RUN in [m.id for m in good.models.list()]
        answer = good.chat.completions.create(
            model=RUN, messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
        )
        assert answer.usage.completion_tokens <= 2
    finally:
        background.stop()
        server.close()
