"""The OpenAI-compatible provider client, over real HTTP against a scripted server (no mocked transport)."""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedServer

from finetuneflow.config import to_dict
from finetuneflow.dataset.provider import Provider
from finetuneflow.errors import CircuitOpen, ProviderError

from .provider_helpers import KEY, Waits, config, free_port, provider

MESSAGES = [{"role": "user", "content": "Write one question and answer about water."}]
SCHEMA = {"title": "qa", "type": "object", "properties": {"question": {"type": "string"}}}


@pytest.fixture(autouse=True)
def _no_keys(no_keys: None) -> None:
    """No API key variables from the machine running the tests."""


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


# -- answers -----------------------------------------------------------------------------------------


def test_valid_answer_and_usage(srv: ScriptedServer) -> None:
    srv.script(Reply.valid({"question": "q", "answer": "a"}))
    with provider(srv.url) as p:
        out = p.chat(MESSAGES, temperature=0.2, max_tokens=50)
    assert json.loads(out.text) == {"question": "q", "answer": "a"}
    assert (out.finish_reason, out.attempts, out.model) == ("stop", 1, "test-model")
    assert out.prompt_tokens == 7 and out.completion_tokens == 4  # the scripted server counts words
    assert out.seconds > 0
    sent = srv.chat_requests[0].body
    assert out.request == sent
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["stream"] is False
    assert "response_format" not in sent


@pytest.mark.parametrize(
    "reply, text, finish",
    [
        (Reply.empty(), "", "stop"),
        (Reply.truncated(), Reply.truncated().content, "length"),
        (Reply.fenced(), Reply.fenced().content, "stop"),
        (Reply.malformed(), Reply.malformed().content, "stop"),
    ],
)
def test_content_is_returned_as_is(srv: ScriptedServer, reply: Reply, text: str, finish: str) -> None:
    """Empty, cut-off or unparsable content is the caller's to validate, not an error here."""
    srv.script(reply)
    with provider(srv.url) as p:
        out = p.chat(MESSAGES)
    assert (out.text, out.finish_reason, out.attempts) == (text, finish, 1)


def test_list_models() -> None:
    with ScriptedServer(models=("a", "b")) as srv, provider(srv.url) as p:
        assert p.list_models() == ["a", "b"]


# -- retries -----------------------------------------------------------------------------------------


def test_429_waits_what_retry_after_says(srv: ScriptedServer) -> None:
    srv.script(Reply.rate_limited(retry_after="2"), Reply.valid())
    waits = Waits()
    with provider(srv.url, waits, max_backoff_s=30.0) as p:
        out = p.chat(MESSAGES)
    assert waits == [2.0] and out.attempts == 2 and len(srv.chat_requests) == 2


def test_retry_after_http_date_and_cap(srv: ScriptedServer) -> None:
    soon = email.utils.formatdate(time.time() + 10, usegmt=True)
    srv.script(Reply.rate_limited(retry_after=soon), Reply.rate_limited(retry_after="600"), Reply.valid())
    waits = Waits()
    with provider(srv.url, waits, max_backoff_s=30.0) as p:
        p.chat(MESSAGES)
    assert 8 <= waits[0] <= 10  # the date has one-second resolution
    assert waits[1] == 30.0  # capped by max_backoff_s


def test_500_then_success_with_jittered_backoff(srv: ScriptedServer) -> None:
    srv.script(Reply.server_error(500), Reply.server_error(503), Reply.valid())
    waits = Waits()
    with provider(srv.url, waits, backoff_s=1.0, max_backoff_s=30.0) as p:
        out = p.chat(MESSAGES)
    assert out.attempts == 3
    assert 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 2.0  # full jitter over 1 s, then 2 s


def test_retries_run_out(srv: ScriptedServer) -> None:
    srv.script(*[Reply.server_error(502)] * 3)
    with provider(srv.url, max_retries=2) as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert (info.value.kind, info.value.status, info.value.attempts) == ("server", 502, 3)


def test_timeout_is_retried_then_reported(srv: ScriptedServer) -> None:
    srv.script(Reply.slow(1.0), Reply.slow(1.0))
    start = time.monotonic()
    with provider(srv.url, timeout_s=0.3, max_retries=1) as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert info.value.kind == "timeout" and info.value.attempts == 2
    assert "timeout_s" in str(info.value)
    assert time.monotonic() - start < 1.5
    assert len(srv.chat_requests) == 2


def test_timeout_then_success(srv: ScriptedServer) -> None:
    srv.script(Reply.slow(1.0), Reply.valid("fine"))
    with provider(srv.url, timeout_s=0.3) as p:
        out = p.chat(MESSAGES)
    assert out.text == "fine" and out.attempts == 2


def test_dropped_connection_is_retried(srv: ScriptedServer) -> None:
    srv.script(Reply.dropped(), Reply.valid("after the drop"))
    with provider(srv.url) as p:
        out = p.chat(MESSAGES)
    assert out.text == "after the drop" and out.attempts == 2


def test_unreachable_server_is_a_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with provider(url, max_retries=1) as p, pytest.raises(ProviderError) as e:
        p.chat(MESSAGES)
    assert e.value.kind == "connection" and e.value.attempts == 2


def test_bad_response_is_retried_once(srv: ScriptedServer) -> None:
    srv.script(Reply.bad_shape(), Reply.valid("ok now"))
    with provider(srv.url) as p:
        assert p.chat(MESSAGES).attempts == 2
        srv.script(Reply.bad_shape(), Reply(raw_body=b"not json"), Reply.valid())
        with pytest.raises(ProviderError) as info:
            p.chat(MESSAGES)
    assert info.value.kind == "bad_response" and info.value.attempts == 2


# -- errors that are not retried -----------------------------------------------------------------------


def test_401_names_the_variable_and_is_not_retried(
    srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    srv.script(Reply.error(401, "Incorrect API key provided"))
    with provider(srv.url, preset="openai") as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert (info.value.kind, info.value.status, info.value.attempts) == ("auth", 401, 1)
    assert "OPENAI_API_KEY" in str(info.value) and "Incorrect API key" in str(info.value)
    assert len(srv.chat_requests) == 1


def test_404_points_at_model_and_provider_test(srv: ScriptedServer) -> None:
    srv.script(Reply.error(404, "model 'nope' not found"))
    with provider(srv.url, model="nope") as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert info.value.kind == "not_found" and "ftf provider test" in str(info.value)
    assert len(srv.chat_requests) == 1


def test_400_shows_the_servers_message(srv: ScriptedServer) -> None:
    srv.script(Reply.error(400, "messages: too long for the context window"))
    with provider(srv.url) as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert info.value.kind == "bad_request" and "too long for the context window" in str(info.value)
    assert len(srv.chat_requests) == 1


def test_redirect_names_the_new_address(srv: ScriptedServer) -> None:
    srv.script(Reply("moved", status=308, headers={"Location": "https://elsewhere/v1/chat/completions"}))
    with provider(srv.url) as p, pytest.raises(ProviderError) as info:
        p.chat(MESSAGES)
    assert info.value.kind == "bad_request" and "https://elsewhere" in str(info.value)


# -- concurrency and circuit ---------------------------------------------------------------------------


def test_concurrency_bound_holds_under_16_threads() -> None:
    with ScriptedServer(latency_s=0.03) as srv, provider(srv.url, concurrency=3) as p:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(3):
                    p.chat(MESSAGES)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(srv.chat_requests) == 48
    assert srv.max_in_flight <= 3 and p.max_in_flight == 3
    assert srv.max_in_flight >= 2


def test_circuit_opens_and_fails_fast() -> None:
    with ScriptedServer(lambda body: Reply.server_error(503, "model is loading")) as srv:
        with provider(srv.url, max_retries=1, circuit_failures=3) as p:
            for _ in range(3):
                with pytest.raises(ProviderError) as info:
                    p.chat(MESSAGES)
                assert not isinstance(info.value, CircuitOpen)
            sent = len(srv.requests)
            start = time.monotonic()
            with pytest.raises(CircuitOpen) as info:
                p.chat(MESSAGES)
            assert time.monotonic() - start < 0.1
        assert len(srv.requests) == sent == 6
    message = str(info.value)
    assert "3 calls failed" in message and "model is loading" in message and "ftf provider test" in message


def test_a_success_resets_the_circuit(srv: ScriptedServer) -> None:
    with provider(srv.url, max_retries=0, circuit_failures=2) as p:
        for _ in range(3):
            srv.script(Reply.server_error(500), Reply.valid())
            with pytest.raises(ProviderError):
                p.chat(MESSAGES)
            p.chat(MESSAGES)


# -- structured output ---------------------------------------------------------------------------------


def test_json_schema_is_sent(srv: ScriptedServer) -> None:
    with provider(srv.url) as p:
        out = p.chat(MESSAGES, json_schema=SCHEMA)
    fmt = srv.chat_requests[0].body["response_format"]
    assert fmt == {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA, "strict": False}}
    assert out.request["response_format"] == fmt


def test_response_format_downgrade_is_remembered() -> None:
    def no_schema(body: dict[str, Any]) -> Reply:
        if body.get("response_format", {}).get("type") == "json_schema":
            return Reply.error(400, "response_format type 'json_schema' is not supported")
        return Reply.valid()

    with ScriptedServer(no_schema) as srv, provider(srv.url) as p:
        out = p.chat(MESSAGES, json_schema=SCHEMA)
        assert out.request["response_format"] == {"type": "json_object"} and out.attempts == 2
        assert p.structured_output == "json_object"
        p.chat(MESSAGES, json_schema=SCHEMA)
        sent = [r.body.get("response_format", {}).get("type") for r in srv.chat_requests]
    assert sent == ["json_schema", "json_object", "json_object"]


def test_downgrade_goes_down_to_no_response_format() -> None:
    def plain_only(body: dict[str, Any]) -> Reply:
        if "response_format" in body:
            return Reply.error(400, "unknown field: response_format")
        return Reply.valid()

    with ScriptedServer(plain_only) as srv, provider(srv.url) as p:
        out = p.chat(MESSAGES, json_schema=SCHEMA)
        assert "response_format" not in out.request and p.structured_output is None
        p.chat(MESSAGES, json_schema=SCHEMA)
    assert len(srv.chat_requests) == 4


def test_a_400_about_something_else_does_not_downgrade(srv: ScriptedServer) -> None:
    srv.script(Reply.error(400, "prompt too long"))
    with provider(srv.url) as p, pytest.raises(ProviderError):
        p.chat(MESSAGES, json_schema=SCHEMA)
    assert p.structured_output == "json_schema" and len(srv.chat_requests) == 1


# -- the API key ---------------------------------------------------------------------------------------


def test_key_never_leaks(
    srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = config(srv.url, preset="openai", max_retries=1)
    seen: list[str] = []
    srv.script(
        Reply.valid(),
        Reply.error(401, f"Incorrect API key provided: {KEY}"),
        Reply.error(400, f"bad request from key {KEY}"),
        Reply.server_error(500, f"crash near {KEY}"),
        Reply.server_error(500, f"crash near {KEY}"),
        Reply(raw_body=f"<html>{KEY}</html>".encode()),
        Reply(raw_body=f"<html>{KEY}</html>".encode()),
    )
    with Provider(cfg, sleep=Waits()) as p:
        out = p.chat(MESSAGES)
        seen += [repr(p), str(vars(p)), json.dumps(out.request), repr(out)]
        for _ in range(4):
            with pytest.raises(ProviderError) as info:
                p.chat(MESSAGES)
            assert "***" in str(info.value)
            seen += [str(info.value), repr(info.value), str(info.value.args), info.value.message]
    seen += [repr(cfg), json.dumps(to_dict(cfg)), json.dumps(to_dict(cfg.resolved())), caplog.text]
    assert not [s for s in seen if KEY in s]
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"  # yet the server got it
    assert out.request["max_completion_tokens"] == cfg.max_tokens  # OpenAI's name for the limit


def test_key_file(srv: ScriptedServer, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    with Provider(config(srv.url, api_key_file=str(path))) as p:
        p.chat(MESSAGES)
        assert p.key_source == f"file {path}"
    assert srv.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    path.chmod(0o644)
    with pytest.raises(ProviderError) as info:
        Provider(config("http://127.0.0.1:1/v1", api_key_file=str(path)))
    assert info.value.kind == "auth" and "chmod 600" in str(info.value) and KEY not in str(info.value)
    with pytest.raises(ProviderError, match="no such file"):
        Provider(config("http://127.0.0.1:1/v1", api_key_file=str(tmp_path / "missing")))


def test_generic_key_variable_and_missing_key(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderError, match="OLLAMA_API_KEY") as info:
        Provider(config(srv.url, preset="ollama-cloud"))
    assert info.value.kind == "auth"
    monkeypatch.setenv("FTF_PROVIDER_API_KEY", KEY)
    with Provider(config(srv.url, preset="ollama-cloud")) as p:
        p.chat(MESSAGES)
    assert srv.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_local_server_gets_no_authorization_header(srv: ScriptedServer) -> None:
    with provider(srv.url, preset="ollama") as p:
        p.chat(MESSAGES)
    assert "authorization" not in srv.chat_requests[0].headers


# -- config --------------------------------------------------------------------------------------------


def test_server_capacity_mode_counts_overflow_and_utilization() -> None:
    srv = ScriptedServer(latency_s=0.25, capacity=2)
    with srv, provider(srv.url, concurrency=4, max_retries=0) as p:
        start = time.monotonic()
        results: list[str] = []
        together = threading.Barrier(4)

        def call() -> None:
            together.wait()
            try:
                p.chat(MESSAGES)
                results.append("ok")
            except ProviderError as err:
                results.append(err.kind)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
    assert sorted(results) == ["ok", "ok", "rate_limit", "rate_limit"] and srv.over_capacity == 2
    assert srv.served == 2 and 0.5 <= srv.busy_seconds() < 1.0
    assert 0 < srv.utilization(wall) <= 1
