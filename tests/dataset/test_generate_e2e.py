"""Generation end to end over real HTTP: a loopback OpenAI-compatible server, the quickstart
documents, the CLI; then the files trainers read, the audit log, resume, preview and review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llm_server import Reply, ScriptedServer
from sqlalchemy import func, select
from typer.testing import CliRunner

from dataset.teacher import teacher
from finetuneflow import api
from finetuneflow.cli import app
from finetuneflow.dataset import review
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.dataset.generate import GenerateConfig
from finetuneflow.dataset.presets import ProviderConfig
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.state import Example, LLMCall, session_scope

DATA = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "data"
KEY = "sk-test-DO-NOT-LEAK-4242"


@pytest.fixture
def project(tiny_model: Path) -> str:
    api.ingest([DATA], "gen", IngestConfig(tokenizer=str(tiny_model), max_tokens=96, overlap=8, workers=1))
    return "gen"


def provider(url: str, **more: Any) -> ProviderConfig:
    return ProviderConfig(preset="custom", base_url=url, model="test-model", **more)


def calls(status: str | None = None) -> int:
    with session_scope() as s:
        q = select(func.count(LLMCall.id))
        return s.scalar(q.where(LLMCall.status == status) if status else q) or 0


def test_cli_generates_builds_and_never_writes_the_key(
    project: str, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTF_PROVIDER_API_KEY", KEY)
    with ScriptedServer(teacher) as srv:
        result = CliRunner().invoke(
            app,
            ["dataset", "generate", "-p", project, "--preset", "custom", "--base-url", srv.url,
             "--model", "test-model", "--judge", "-f", "messages", "-f", "openai", "-f", "alpaca"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in srv.chat_requests)
    out = ftf_home / "projects" / project / "datasets" / "default"
    train = [json.loads(line) for line in (out / "chat" / "train.jsonl").read_text().splitlines()]
    assert any(row["source"].endswith("handbook.md") for row in train)  # generated from the document
    for name in ("rejected.jsonl", "stats.json", "token_lengths.png", "exports/dataset_info.json"):
        assert (out / name).exists(), name
    assert (out / "exports" / "openai" / "train.jsonl").exists()
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(out / "chat" / "train.jsonl"))["train"]
    assert loaded.num_rows == len(train) and "messages" in loaded.column_names
    assert calls("ok") >= 2 and calls("error") == 0
    for path in ftf_home.rglob("*"):  # the key is nowhere on disk: files, database, logs
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_bad_answers_are_repaired_retried_or_counted_never_lost(project: str) -> None:
    script = [
        Reply.fenced({"examples": [{"question": "What does the fenced answer say?", "answer": "x"}]}),
        Reply.rate_limited("0"),
        Reply.server_error(),
        Reply.malformed(),  # then the LLM repair call is answered by the teacher
        Reply.empty(),
        Reply.truncated(),
    ]
    gen = GenerateConfig(max_chunks=6, grounding_min=0.0)
    with ScriptedServer(teacher) as srv:
        srv.script(*script)
        cfg = provider(srv.url, concurrency=1, backoff_s=0.0, timeout_s=5)
        report = api.generate_dataset(project, cfg, gen, DatasetConfig(), build=False)["generation"]
    summary = report.to_json()
    assert summary["chunks"] == 6 and summary["stopped"] is None
    # Six chunks of at most 96 tokens, one pair asked of each (max(1, round(tokens / 120))): every
    # asked pair is kept or counted once as rejected with a reason. 429 and 500 are retried away.
    rejected = summary["rejected"]
    assert summary["asked"] == 6 == summary["kept"] + sum(rejected.values())
    assert summary["kept"] == 3  # two teacher answers and the malformed one, after the LLM repair
    assert rejected == {
        "validate: answer missing or empty": 1,  # the fenced pair's answer "x"
        'validate: no "examples" list in the output': 1,  # the truncated answer, repaired to {}
        "parse: output is not the requested JSON": 1,  # the empty answer (nothing to repair)
    }
    assert summary["failed_chunks"] == 1  # the empty answer: no output, nothing to repair
    with session_scope() as s:
        purposes = set(s.scalars(select(LLMCall.purpose)))
    assert "repair" in purposes


def test_a_dead_server_stops_the_run_and_a_rerun_only_does_what_is_missing(project: str) -> None:
    gen = GenerateConfig(max_chunks=8)
    failing = {"left": 3}

    def flaky(body: dict[str, Any]) -> Reply:
        if failing["left"] > 0:
            failing["left"] -= 1
            return teacher(body)
        return Reply.server_error(503, "overloaded")

    with ScriptedServer(flaky) as srv:
        cfg = provider(srv.url, concurrency=1, max_retries=0, circuit_failures=2)
        first = api.generate_dataset(project, cfg, gen, DatasetConfig(), build=False)["generation"]
    assert first.stopped and ("503" in first.stopped or "overloaded" in first.stopped)
    with session_scope() as s:
        kept_before = s.scalar(select(func.count(Example.id)).where(Example.origin == "llm"))
    assert kept_before and kept_before > 0
    with ScriptedServer(teacher) as srv:
        second = api.generate_dataset(project, provider(srv.url), gen, DatasetConfig())["generation"]
        asked_again = len(srv.chat_requests)
    assert second.stopped is None and second.reused_calls == 3
    assert asked_again == 8 - 3  # only the chunks without a logged answer
    with session_scope() as s:
        assert s.scalar(select(func.count(Example.id)).where(Example.origin == "llm")) >= kept_before


def test_preview_is_reused_by_the_full_run_and_review_feeds_the_build(project: str) -> None:
    with ScriptedServer(teacher) as srv:
        cfg = provider(srv.url)
        preview = api.generate_dataset(project, cfg, GenerateConfig(preview_chunks=3), preview=True)
        assert len(srv.chat_requests) == 3 and preview["generation"].examples
        assert "manifest" not in preview
        full = api.generate_dataset(project, cfg, GenerateConfig(), DatasetConfig())
        assert full["generation"].reused_calls == 3
    page = review.list_examples(project, "default", origin="llm", status="new", limit=1000)
    first, second, low, unrated = (item["id"] for item in page.items[:4])
    review.rate_example(project, "default", first, 5)
    review.delete_example(project, "default", second)
    review.approve_example(project, "default", low)
    review.rate_example(project, "default", low, 2)
    manifest = api.build_dataset(project, DatasetConfig(min_rating=4))
    out = Path(manifest["path"])
    rows = [json.loads(x) for f in out.glob("chat/*.jsonl") for x in f.read_text().splitlines()]
    with session_scope() as s:
        uid = {i: s.scalar(select(Example.uid).where(Example.id == i)) for i in (first, second, low, unrated)}
    built = {r["id"] for r in rows}
    assert uid[first] in built and uid[unrated] in built  # rated high enough, or not rated at all
    assert uid[second] not in built and uid[low] not in built  # deleted; approved but rated too low
    reasons = {json.loads(x)["reason"] for x in (out / "rejected.jsonl").read_text().splitlines()}
    assert {"deleted in review", "rating below 4"} <= reasons


def test_provider_test_command_lists_models_and_fails_clearly() -> None:
    runner = CliRunner()
    with ScriptedServer(teacher) as srv:
        ok = runner.invoke(
            app, ["provider", "test", "--preset", "custom", "--base-url", srv.url, "--model", "test-model"]
        )
        missing = runner.invoke(
            app, ["provider", "test", "--preset", "custom", "--base-url", srv.url, "--model", "nope"]
        )
    assert ok.exit_code == 0 and '"test-model"' in ok.output, ok.output
    assert missing.exit_code == 1 and "nope" in missing.output
