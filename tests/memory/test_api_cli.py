"""``ftf memory`` over the API: every command once, and ``sync`` embedding the ingested chunks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from finetuneflow import api
from finetuneflow.cli import app
from finetuneflow.ingest.config import IngestConfig
from memory.conftest import HASH

runner = CliRunner()


def ftf(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["memory", *args], catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def test_every_memory_command(tmp_path: Path) -> None:
    assert "taught #1" in ftf("teach", "The warranty lasts two years.", "-p", "m", "--embedder", HASH)
    ftf("teach", "Error E21 means the tank is empty.", "-p", "m", "-i", "0.8", "-t", "codes")
    out = ftf("recall", "How long is the warranty?", "-p", "m", "-k", "1")
    assert "The warranty lasts two years." in out and "E21" not in out
    hits = json.loads(ftf("recall", "warranty", "-p", "m", "--json", "--vector-only"))
    assert hits[0]["parts"]["bm25"] == 0.0 and hits[0]["source"] == "taught"
    assert "#1 corrected by #3" in ftf("correct", "1", "The warranty lasts three years.", "-p", "m")
    assert "#2 corrected by #4" in ftf("correct", "error E21 means", "E21: the lid is open.", "-p", "m")
    history = ftf("history", "1", "-p", "m")
    assert history.index("two years") < history.index("three years")
    assert "1 items" in ftf("list", "-p", "m", "--tag", "codes", "--kind", "fact")
    assert "forgot #3" in ftf("forget", "3", "-p", "m")
    assert "purged 1 items" in ftf("purge", "-p", "m")
    status = json.loads(ftf("status", "-p", "m"))
    assert status["by_kind"] == {"fact": 2, "correction": 1} and status["index"]["ok"]
    assert "no memory item #3" in ftf("forget", "3", "-p", "m", code=2)
    assert "no project 'nope'" in ftf("recall", "x", "-p", "nope", code=2)
    assert "k: must be >= 1" in ftf("recall", "x", "-p", "m", "-k", "0", code=2)


def test_sync_embeds_the_ingested_chunks_once(tmp_path: Path, tiny_model: Path) -> None:
    doc = tmp_path / "notes.md"
    pump = "The pump is serviced every spring by the caretaker, who checks the seals and the filter. " * 3
    boiler = "The boiler shows code B7 when its pressure falls; top it up to one and a half bar. " * 3
    doc.write_text(f"# Pump\n\n{pump}\n\n# Boiler\n\n{boiler}\n")
    api.ingest([doc], project="d", config=IngestConfig(tokenizer=str(tiny_model), max_tokens=64, overlap=0))
    assert "chunks added" in ftf("sync", "-p", "d", "--embedder", HASH)
    docs = api.list_memories("d", kind="document")
    assert docs and all(d["source"].startswith("notes.md") and d["chunk_id"] for d in docs)
    assert docs[0]["importance"] == 0.55
    assert "0 chunks added" in ftf("sync", "-p", "d")  # nothing new
    top = api.recall("d", "When is the pump serviced?", 1)[0]
    assert top["kind"] == "document" and "spring" in top["text"]
