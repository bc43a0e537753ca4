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
        named = {"Authorization": "Bearer s3cret-key", "Host": "serve.example"}  # the key is the guard here
        assert httpx.get(f"{url}/models", headers=named).status_code == 200
        answer = good.chat.completions.create(
            model=RUN, messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
        )
        assert answer.usage.completion_tokens <= 2
    finally:
        background.stop()
        server.close()


def raw_post(live: Live, text: str) -> httpx.Response:
    """A body as written: JSON may hold what ``json=`` will not send (NaN, a lone surrogate's escape)."""
    headers = {"content-type": "application/json"}
    return httpx.post(f"{live.url}/chat/completions", content=text.encode(), headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ('"seed": 18446744073709551616', "seed"),  # 2**64: no torch generator takes it
        ('"temperature": 1e-40', "temperature"),  # the logits over it overflow to inf
        ('"temperature": NaN', "temperature"),
        ('"temperature": 2.5', "temperature"),  # OpenAI's range is 0 to 2
    ],
)
def test_sampling_values_that_cannot_be_sampled_are_400_naming_the_field(
    live: Live, extra: str, param: str
) -> None:
    hi = '[{"role": "user", "content": "hi"}]'
    response = raw_post(live, f'{{"model": "{RUN}", "messages": {hi}, {extra}}}')
    assert response.status_code == 400 and error_of(response)["param"] == param


def test_the_api_checks_the_sampling_values_itself(live: Live) -> None:
    """Below the HTTP schema, ``ModelServer.start`` (``Sampling.problems``) refuses them too."""
    from finetuneflow.api.serving import ChatRequest
    from finetuneflow.errors import RequestRejected

    hi = [{"role": "user", "content": "hi"}]
    for asked, param in (({"temperature": float("nan")}, "temperature"),
                         ({"temperature": 1e-40}, "temperature"), ({"seed": 2**64}, "seed")):  # fmt: skip
        request = ChatRequest(RUN, hi, **asked)  # type: ignore[arg-type]
        with pytest.raises(RequestRejected) as caught:
            live.server.start(request, lambda _p: None, lambda _a: None)
        assert caught.value.param == param


def test_fields_that_would_change_the_answer_are_refused_by_name(live: Live) -> None:
    ask = {"model": RUN, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for extra in ({"logprobs": True}, {"top_logprobs": 2}, {"tools": [tool]}, {"tool_choice": "auto"},
                  {"response_format": {"type": "json_object"}}, {"logit_bias": {"5": 10}},
                  {"presence_penalty": 0.5}):  # fmt: skip
        response = post(live, ask | extra)
        assert response.status_code == 400, extra
        assert error_of(response)["param"] == next(iter(extra))
        assert error_of(response)["code"] == "unsupported_parameter"
    # what changes nothing (or asks for what the server does anyway) is accepted
    harmless = {"user": "u-1", "store": False, "metadata": {"k": "v"}, "logprobs": False, "tools": [],
                "response_format": {"type": "text"}, "presence_penalty": 0,
                "parallel_tool_calls": False}  # fmt: skip
    answer = live.client.chat.completions.create(**ask, temperature=0, **harmless)  # type: ignore[arg-type]
    assert answer.usage.completion_tokens <= 2


def test_text_that_is_not_utf8_is_400_naming_the_field(live: Live) -> None:
    def chat(messages: str, more: str = "") -> str:
        return f'{{"model": "{RUN}", "messages": {messages}, "max_tokens": 1{more}}}'

    hi = '[{"role": "user", "content": "hi"}]'
    for body, param in (
        (chat('[{"role": "user", "content": "hi \\ud800 there"}]'), "messages[0].content"),
        (chat('[{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]'),
         "messages[0].content[0].text"),
        (chat(hi, ', "stop": ["ok", "\\ud800"]'), "stop[1]"),
    ):  # fmt: skip
        response = raw_post(live, body)
        assert response.status_code == 400, response.text
        assert error_of(response)["param"] == param and error_of(response)["code"] == "invalid_text"
    paired = raw_post(live, chat('[{"role": "user", "content": "\\ud83d\\ude00"}]'))
    assert paired.status_code == 200  # a surrogate pair is one character (an emoji): fine


def test_an_internal_error_answers_its_type_only(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("cannot open /home/someone/.secret-token")

    monkeypatch.setattr(live.server, "start", broken)
    response = post(live, {"model": RUN, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500
    message = error_of(response)["message"]
    assert "RuntimeError" in message and "secret" not in message
    assert ".secret-token" in caplog.text  # the details are in the server's log


def test_a_failed_generation_answers_its_type_only_and_names_running_out_of_memory(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from finetuneflow.models.batching import DecodeBatch

    raised: list[BaseException] = []

    def failing(self: Any, rows: Any) -> None:  # in the scheduler's thread, as a model error is
        raise raised[-1]

    monkeypatch.setattr(DecodeBatch, "admit", failing)
    ask = {"model": RUN, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    raised.append(RuntimeError("shape mismatch near /home/someone/.secret-token"))
    whole = post(live, ask)
    assert whole.status_code == 500, whole.text
    assert error_of(whole)["message"] == "generation failed (RuntimeError); the server log has the details"
    with httpx.stream("POST", f"{live.url}/chat/completions", json=ask | {"stream": True}, timeout=30) as sse:
        events = [line for line in sse.iter_lines() if line.startswith("data: ")]
    assert "secret" not in "".join(events) and "generation failed (RuntimeError)" in events[-1]
    assert caplog.text.count(".secret-token") == 2  # both in the server's log, with their tracebacks

    raised.append(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 4294967296 bytes."))  # fmt: skip
    with pytest.raises(openai.InternalServerError) as caught:
        live.client.with_options(max_retries=0).chat.completions.create(**ask)
    assert caught.value.status_code == 503 and caught.value.code == "out_of_memory"
    assert "smaller max_tokens" in caught.value.message


def test_without_a_key_only_this_machines_names_may_call(live: Live) -> None:
    """DNS rebinding: a page at a name of its own that resolves to 127.0.0.1 sends that name."""
    port = live.url.split(":")[2].split("/")[0]
    foreign = ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}", "evil@127.0.0.1",
               "localhost.attacker.example")  # fmt: skip
    for host in foreign:
        response = httpx.get(f"{live.url}/models", headers={"Host": host})
        assert response.status_code == 403, host
        assert error_of(response)["code"] == "foreign_host"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST", f"localhost.:{port}",
                 f"chat.localhost:{port}"):  # fmt: skip
        assert httpx.get(f"{live.url}/models", headers={"Host": host}).status_code == 200, host


def test_max_prompt_tokens_narrows_the_context_and_never_widens_it(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.models.generate import count_prompt_tokens

    monkeypatch.setattr(live.server.settings, "max_prompt_tokens", 5000)  # past the model's 1024
    tok, words = live.server.served.tokenizer, ["printer"] * 300
    while count_prompt_tokens(tok, [{"role": "user", "content": " ".join(words)}]) < 1000:
        words += ["printer"] * 10
    ask = {"model": RUN, "messages": [{"role": "user", "content": " ".join(words)}], "max_tokens": 64}
    response = post(live, ask)  # 1000+ prompt tokens and 64 new ones do not fit in 1024
    assert response.status_code == 400, response.text
    assert (
        error_of(response)["code"] == "context_length_exceeded"
        and "context 1024" in error_of(response)["message"]
    )


def test_the_developer_role_is_taken_as_the_system_prompt(live: Live) -> None:
    # newer OpenAI clients and agent frameworks send "developer" where older ones sent "system"
    messages = [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "hi"}]
    answer = live.client.chat.completions.create(model=RUN, messages=messages, max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_messages_the_chat_template_refuses_are_400_naming_why(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = live.server.served.tokenizer
    refusing = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                "{% endif %}" + tok.chat_template)  # fmt: skip
    monkeypatch.setattr(tok, "chat_template", refusing)  # as Gemma's template does
    ask = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    response = post(live, {"model": RUN, "messages": ask, "max_tokens": 2})
    assert response.status_code == 400, response.text
    assert (
        error_of(response)["param"] == "messages"
        and "System role not supported" in error_of(response)["message"]
    )


def test_a_lookup_error_inside_the_server_is_internal_not_model_not_found(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise KeyError("temperature")

    monkeypatch.setattr(live.server, "_sampling", broken)
    response = post(live, {"model": RUN, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500 and "KeyError" in error_of(response)["message"]
    assert error_of(response)["code"] != "model_not_found"


def test_a_stream_stops_its_generation_when_the_response_ends_before_it_began() -> None:
    """uvicorn says ASGI 2.3, so Starlette races the stream against the client's disconnect, and a
    client gone before the first write cancels the stream before its generator ever ran: the
    generator's own ``finally`` never runs. The response itself cancels the job."""
    import asyncio

    from finetuneflow.serve.app import _Stream

    cancelled: list[Any] = []
    started: list[bool] = []

    class Server:
        def cancel(self, job: Any) -> None:
            cancelled.append(job)

    async def events() -> Any:
        started.append(True)
        yield "data: never\n\n"

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(_message: Any) -> None:
        await asyncio.sleep(0.01)  # a socket write

    job = object()
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST"}
    asyncio.run(_Stream(Server(), job, events())(scope, receive, send))  # type: ignore[arg-type]
    assert started == [] and cancelled == [job]
