"""The routes that load a model in the request (not as a job): the training plan, one-question
chat with a tuned run, and the memory (its embedder); SQLite only (the database is not their point)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import QUICKSTART
from fastapi.testclient import TestClient
from serve.conftest import add_run

from finetuneflow import api
from finetuneflow.ingest.config import IngestConfig


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_plan_of_a_built_dataset(client: TestClient, project: str, tiny_model: Path) -> None:
    api.ingest([QUICKSTART / "data" / "qa.csv"], project, IngestConfig(tokenizer=str(tiny_model)))
    api.build_dataset(project)
    body = {"dataset": "default", "config": {"base_model": str(tiny_model), "max_len": 64}}
    planned = client.post(f"/api/projects/{project}/plan", json=body)
    assert planned.status_code == 200, planned.text
    assert planned.json()["dataset"]["examples"] > 0 and "fits" in planned.json()["plan"]
    missing = client.post(f"/api/projects/{project}/plan", json={**body, "dataset": "nope"})
    assert missing.status_code == 404 and "no built dataset" in missing.json()["error"]["message"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_chat_answers_with_a_tuned_run(client: TestClient, tiny_tuned_run: Path) -> None:
    add_run(tiny_tuned_run, "chat", "tiny-run")
    r = client.post("/api/projects/chat/chat", json={"question": "What does E21 mean?", "run_id": "tiny-run",
                                                     "memory": False})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["question"] == "What does E21 mean?" and isinstance(r.json()["answer"], str)
    assert api.exchange_log("chat")[-1]["answer"] == r.json()["answer"]  # logged like any other exchange
    gone = client.post("/api/projects/chat/chat", json={"question": "hi", "run_id": "no-such-run"})
    assert gone.status_code == 404


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_memory_teach_recall_list_forget(client: TestClient, project: str) -> None:
    p = f"/api/projects/{project}/memory"
    client.post("/api/projects", json={"name": project})
    taught = client.post(p, json={"text": "Error E7 means the grinder is jammed.", "tags": ["errors"]})
    assert taught.status_code == 201, taught.text
    item = taught.json()["id"]
    client.post(p, json={"text": "The water tank holds 1.8 litres."})
    best = client.post(f"{p}/recall", json={"query": "what is E7?", "k": 1}).json()
    assert [m["id"] for m in best] == [item]
    assert {m["id"] for m in client.get(p).json()} >= {item}
    assert client.delete(f"{p}/{item}").status_code == 200
    assert item not in [m["id"] for m in client.post(f"{p}/recall", json={"query": "what is E7?"}).json()]
    assert client.post(p, json={"text": ""}).status_code == 400
