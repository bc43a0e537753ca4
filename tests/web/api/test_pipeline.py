"""The whole pipeline through the REST API with a real ``ftf worker`` per queue: upload the sample
files, ingest, build, review, train the tiny model, evaluate, export, download; each step a job followed to
its end over server-sent events. On SQLite with the embedded broker (nothing to install) and on
the real PostgreSQL with the real Redis (the scale-out configuration)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICKSTART
from fastapi.testclient import TestClient

from finetuneflow import paths
from finetuneflow.config import to_dict
from finetuneflow.train.config import TrainConfig


def _follow(client: TestClient, ref: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of a queued job, read from its SSE stream, which ends when the job is done."""
    events = []
    with client.stream("GET", ref["events"]) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def _ran(client: TestClient, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    events = _follow(client, response.json())
    assert events[-1]["kind"] == "finished", events[-1]
    return events[-1]["payload"]["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("database", "broker"), [("sqlite", "embedded"), ("postgres", "redis")], indirect=True
)
def test_upload_ingest_build_review_train_evaluate_export_download(
    client: TestClient, project: str, worker: Callable[[str], Any], tiny_model: Path
) -> None:
    worker("default")
    worker("train")
    p = f"/api/projects/{project}"
    client.post("/api/projects", json={"name": project})
    files = [("files", (f.name, f.read_bytes())) for f in sorted((QUICKSTART / "data").iterdir())]
    assert client.post(f"{p}/files", files=files).status_code == 201

    counts = _ran(client, client.post(f"{p}/ingest", json={"config": {"tokenizer": str(tiny_model)}}))[
        "counts"
    ]
    assert counts == {"ingested": 4}
    assert client.get(f"{p}/ingest-report").json()["inputs"]
    assert client.get(f"{p}/chunks?limit=2").json()["total"] > 2

    _ran(client, client.post(f"{p}/datasets", json={}))
    assert [d["name"] for d in client.get(f"{p}/datasets").json() if d["built"]] == ["default"]
    page = client.get(f"{p}/datasets/default/examples?limit=3").json()
    first = page["items"][0]["id"]
    assert (
        client.post(f"{p}/datasets/default/examples/{first}/rate", json={"rating": 5}).json()["rating"] == 5
    )
    assert client.post(f"{p}/datasets/default/examples/{first}/approve").json()["status"] == "approved"
    assert client.delete(f"{p}/datasets/default/examples/{first}").json()["status"] == "deleted"
    assert client.post(f"{p}/datasets/default/examples/{first}/restore").json()["status"] == "new"

    cfg = TrainConfig(
        base_model=str(tiny_model), goal="style", max_len=64, max_steps=3, precision="fp32", threads=1
    )
    queued = client.post(f"{p}/runs", json={"dataset": "default", "config": to_dict(cfg)})
    run_id = queued.json()["run_id"]
    assert _ran(client, queued)["run_id"] == run_id
    assert client.get(f"{p}/runs/{run_id}").json()["status"] == "finished"
    assert [m["step"] for m in client.get(f"{p}/runs/{run_id}/metrics").json() if "loss" in m][-1] == 3

    small = {
        "answers": 3,
        "recall": 2,
        "forgetting": False,
        "max_new_tokens": 8,
        "memory": "off",
        "threads": 1,
    }
    verdict = _ran(client, client.post(f"{p}/runs/{run_id}/evaluations", json={"config": small}))
    assert verdict["run_id"] == run_id and "verdict" in verdict
    assert client.get(f"{p}/runs/{run_id}/evaluation").json()["losses"] == verdict["losses"]

    _ran(client, client.post(f"{p}/runs/{run_id}/exports", json={"config": {"formats": ["adapter"]}}))
    (listed,) = client.get(f"{p}/exports").json()
    names = [f["path"] for f in listed["files"]]
    assert listed["run_id"] == run_id and any(n.endswith("adapter_config.json") for n in names)
    config_file = next(n for n in names if n.endswith("adapter_config.json"))
    got = client.get(f"{p}/exports/{run_id}/files/{config_file}")
    assert got.status_code == 200 and "lora" in got.text.lower()
    for sneaky in ("../../../ftf.db", "..%2F..%2Fproject.json", "/etc/passwd"):
        assert client.get(f"{p}/exports/{run_id}/files/{sneaky}").status_code == 404

    # a job that names the run keeps it (409); once none does, it goes with its exports
    from finetuneflow.api._common import project_id
    from finetuneflow.state import jobs

    waiting = jobs.create(project_id(project), "export", {"args": {"run_id": run_id}}, queue="nowhere")
    busy = client.delete(f"{p}/runs/{run_id}")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "run_in_use", busy.text
    assert f"ftf jobs cancel {waiting}" in busy.json()["error"]["message"]
    assert client.post(f"/api/jobs/{waiting}/cancel").json()["status"] == "cancelled"
    gone = client.delete(f"{p}/runs/{run_id}")
    assert gone.status_code == 200 and gone.json()["run_id"] == run_id and gone.json()["bytes"] > 0
    assert client.get(f"{p}/runs").json() == [] and client.get(f"{p}/exports").json() == []
    assert client.get(f"{p}/runs/{run_id}").status_code == 404
    assert client.delete(f"{p}/runs/{run_id}").status_code == 404
    assert client.delete(f"{p}/runs/..%2F..%2Fftf.db").status_code == 404

    # the whole project: kept (409) while a job waits in it, then gone with its rows and folder
    waiting = jobs.create(project_id(project), "build", {"args": {}}, queue="nowhere")
    busy = client.delete(p)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "project_in_use", busy.text
    assert f"ftf jobs cancel {waiting}" in busy.json()["error"]["message"]
    assert client.post(f"/api/jobs/{waiting}/cancel").json()["status"] == "cancelled"
    gone = client.delete(p)
    assert gone.status_code == 200, gone.text
    assert gone.json()["project"] == project and gone.json()["bytes"] > 0
    assert project not in [x["name"] for x in client.get("/api/projects").json()]
    assert client.get(p).status_code == 404 and client.delete(p).status_code == 404
    kept = client.get(f"/api/jobs/{waiting}").json()  # the job history stays, detached from it
    assert kept["status"] == "cancelled" and kept["project_id"] is None
    assert not paths.project_path(project).exists()
    assert client.delete("/api/projects/..%2Fmodels").status_code in (404, 422)
