"""The studio's pages over the real app (TestClient, SQLite in the test's FTF_HOME): every step
renders from the server's state, the wizard's settings are validated and kept, a provider key is
never answered or rendered, and a reload finds the project's newest job."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from finetuneflow.state import jobs as log
from finetuneflow.web.studio import create_studio_app
from finetuneflow.web.ui import settings as studio
from finetuneflow.web.ui import views

STEPS = [key for key, _ in views.STEPS]


@pytest.fixture
def client() -> TestClient:
    c = TestClient(create_studio_app(), base_url="http://127.0.0.1:8770")  # a local name: no token
    assert c.post("/api/projects", json={"name": "demo"}).status_code == 201
    return c


def test_dashboard_and_every_step_render(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and "/ui/projects/demo/model" in home.text
    for step in STEPS:
        page = client.get(f"/ui/projects/demo/{step}")
        assert page.status_code == 200, (step, page.text[:500])
        assert (
            'aria-current="step"' in page.text
            and f'href="/ui/projects/demo/{step}" aria-current' in page.text
        )
    assert (
        client.get("/ui/projects/demo", follow_redirects=False).headers["location"]
        == "/ui/projects/demo/model"
    )
    assert client.get("/static/studio.js").status_code == 200
    assert client.get("/static/chart.js").status_code == 200


def test_unknown_steps_projects_and_jobs_are_404(client: TestClient) -> None:
    assert client.get("/ui/projects/demo/nope").status_code == 404
    assert client.get("/ui/projects/ghost/model").status_code == 404
    assert client.get("/ui/projects/..%2Fx/model").status_code == 404
    assert client.get("/ui/jobs/999999").status_code == 404


def test_settings_are_validated_as_a_whole_and_kept(client: TestClient, tmp_path: Path) -> None:
    bad = client.post("/ui/projects/demo/settings", json={"goal": "fame", "max_chunk_tokens": 3, "colour": 1})
    assert bad.status_code == 422
    problems = " ".join(bad.json()["error"]["problems"])
    assert "colour" in problems  # unknown keys first; the values are checked once the keys are right
    bad = client.post("/ui/projects/demo/settings", json={"goal": "fame", "max_chunk_tokens": 3})
    assert {p.split(":")[0] for p in bad.json()["error"]["problems"]} == {"goal", "max_chunk_tokens"}
    assert studio.load("demo").goal == "auto"  # nothing written
    gone = client.post("/ui/projects/demo/settings", json={"model": str(tmp_path / "nothing")})
    assert gone.status_code == 422 and "no Hugging Face model folder" in gone.text
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    mine = str(tmp_path / "mine")
    ok = client.post("/ui/projects/demo/settings", json={"model": mine, "train": {"lora.r": 8}})
    assert ok.status_code == 200
    more = client.post("/ui/projects/demo/settings", json={"goal": "style", "train": {"max_steps": 5}})
    assert more.json()["train_config"] == {
        "base_model": mine, "goal": "style", "lora": {"r": 8}, "max_steps": 5,
    }  # fmt: skip
    page = client.get("/ui/projects/demo/train").text
    assert mine in page and '"max_steps": 5' in page  # the Train button sends them


def test_a_provider_key_is_kept_in_an_owner_only_file_and_never_answered(
    client: TestClient, ftf_home: Path
) -> None:
    key = "sk-studio-secret-0042"
    answer = client.post("/ui/projects/demo/provider-key", json={"api_key": key})
    assert answer.status_code == 200 and key not in answer.text
    path = Path(answer.json()["api_key_file"])
    assert path.read_text().strip() == key and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.is_relative_to(ftf_home / "projects" / "demo")
    client.post("/ui/projects/demo/settings", json={"provider_base_url": "http://127.0.0.1:9/v1"})
    page = client.get("/ui/projects/demo/preview").text
    assert key not in page and 'name="api_key" type="password" value=""' in page
    assert client.post("/ui/projects/demo/provider-key", json={"api_key": ""}).status_code == 422


def test_a_reloaded_page_follows_the_projects_newest_job_of_its_step(client: TestClient) -> None:
    pid = client.get("/api/projects/demo").json()
    assert pid["name"] == "demo"
    from finetuneflow.api._common import project_id

    older = log.create(
        project_id("demo"), "train", {"project": "demo", "args": {"run_id": "r-old"}}, queue="train"
    )
    newer = log.create(
        project_id("demo"), "train", {"project": "demo", "args": {"run_id": "r-new"}}, queue="train"
    )
    log.create(project_id("demo"), "ingest", {"project": "demo", "args": {}}, queue="default")
    page = client.get("/ui/projects/demo/train").text
    assert f'data-job-id="{newer}"' in page and 'data-run="r-new"' in page
    page = client.get(f"/ui/projects/demo/train?job={older}").text  # the URL names the job: that one
    assert f'data-job-id="{older}"' in page and 'data-run="r-old"' in page
    assert f'data-job-id="{newer}"' not in client.get("/ui/projects/demo/data").text
    dashboard = client.get("/").text
    assert f"/ui/jobs/{newer}" in dashboard and f"/ui/jobs/{older}" in dashboard


def test_a_project_made_again_under_a_deleted_ones_name_shows_none_of_its_jobs(client: TestClient) -> None:
    from finetuneflow import api
    from finetuneflow.api._common import project_id

    old = log.create(project_id("demo"), "train", {"project": "demo", "args": {"run_id": "r-gone"}})
    log.append(old, "done", {}, status="finished")
    api.delete_project("demo")
    client.post("/api/projects", json={"name": "demo"})
    assert 'data-run="r-gone"' not in client.get("/ui/projects/demo/train").text
    assert views.recent_jobs("demo") == []
    assert [j["project"] for j in views.recent_jobs() if j["id"] == old] == ["demo (deleted)"]
    assert f"/ui/jobs/{old}" in client.get("/").text  # the history stays, named as a deleted project's


def test_exports_list_every_file_with_its_link_and_the_zip_is_served_safely(
    client: TestClient, ftf_home: Path
) -> None:
    exports = ftf_home / "projects" / "demo" / "exports"
    folder = exports / "run-1"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "report.md").write_text("# report")
    (exports / "run-1.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (folder / "export.json").write_text(json.dumps({
        "adapter": {"path": str(folder / "adapter"), "bytes": 2, "files": {"adapter_config.json": "ab" * 32}},
        "report": {"path": str(folder / "report.md")},
        "zip": {"path": str(exports / "run-1.zip"), "bytes": 22, "sha256": "cd" * 32, "files": 2},
        "gguf": {"path": str(folder / "gguf"), "files": {"q8_0": {"path": str(folder / "m.gguf"), "bytes": 1,
                 "verify": {"passed": False, "max_abs_diff": 0.5, "top1_agreement": 0.5, "stops": "no"}}}},
    }))  # fmt: skip
    rows = {r["format"]: r for r in views.exports("demo", "run-1")}
    assert (
        rows["adapter"]["files"][0]["href"]
        == "/api/projects/demo/exports/run-1/files/adapter/adapter_config.json"
    )
    assert rows["adapter"]["files"][0]["sha256"] == "ab" * 6
    assert rows["zip"]["files"][0]["href"] == "/ui/projects/demo/exports/run-1.zip"
    assert (
        rows["gguf q8_0"]["verification"]["ok"] is False
        and "FAILED" in rows["gguf q8_0"]["verification"]["text"]
    )
    assert client.get(rows["adapter"]["files"][0]["href"]).text == "{}"  # the REST API serves it
    assert client.get("/ui/projects/demo/exports/run-1.zip").content.startswith(b"PK")
    for bad in ("..%2Frun-1", ".hidden", "nope"):
        assert client.get(f"/ui/projects/demo/exports/{bad}.zip").status_code == 404


def test_deleted_examples_are_listed_apart_with_a_restore_button(client: TestClient) -> None:
    from dataset.test_review import add

    kept, gone = add("demo", "default", q="Kept?"), add("demo", "default", q="Deleted?")
    path = f"/api/projects/demo/datasets/default/examples/{gone}"
    assert client.delete(path).json()["status"] == "deleted"
    page = client.get("/ui/projects/demo/review").text
    assert f'data-example="{kept}"' in page and f'data-example="{gone}"' not in page
    assert 'data-action="restore"' not in page
    deleted = client.get("/ui/projects/demo/review?status=deleted").text
    assert f'data-example="{gone}"' in deleted and f'data-example="{kept}"' not in deleted
    assert deleted.count('data-action="restore"') == 1 and 'data-action="delete"' not in deleted
    assert '<option value="deleted" selected>' in deleted  # the filter shows what is listed
    assert client.post(f"{path}/restore").json()["status"] != "deleted"  # the route the button calls
    assert f'data-example="{gone}"' in client.get("/ui/projects/demo/review").text
    assert "No deleted examples." in client.get("/ui/projects/demo/review?status=deleted").text


def test_the_train_chart_gets_the_eval_losses_of_the_run(client: TestClient, ftf_home: Path) -> None:
    run = ftf_home / "projects" / "demo" / "runs" / "r1"
    run.mkdir(parents=True)
    rows = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}, {"step": 2, "eval_loss": 2.4},
            {"step": 3, "loss": 2.0}, {"step": 3, "eval_loss": 2.3}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = client.get("/ui/projects/demo/train?run=r1").text
    points = json.loads(page.split("data-points='")[1].split("'")[0])
    evals = json.loads(page.split("data-evals='")[1].split("'")[0])
    assert [p["step"] for p in points] == [1, 2, 3]
    assert [(e["step"], e["eval_loss"]) for e in evals] == [(2, 2.4), (3, 2.3)]
    assert "eval loss" in page  # the legend names the second line


def test_verdict_sentences_show_their_bold_as_bold_and_escape_the_rest() -> None:
    from finetuneflow.web.ui.views import bold

    assert str(bold("answers **the same** as <b>base</b>")) == (
        "answers <strong>the same</strong> as &lt;b&gt;base&lt;/b&gt;"
    )
    assert str(bold(None)) == ""


def test_an_empty_answer_says_so_and_an_unasked_model_shows_no_score() -> None:
    from finetuneflow.web.ui.pages import TEMPLATES

    rows = [{"question": "What is E21?", "reference": "cold gel", "base": {"answer": "", "f1": 0.0},
             "tuned": {"answer": "<b>cold</b> gel", "f1": 1.0}},
            {"question": "Unscored?", "reference": "yes", "base": None, "tuned": None}]  # fmt: skip
    page = TEMPLATES.env.get_template("steps/evaluate.html").render(
        steps=views.STEPS, step="evaluate", project="demo", title="Evaluate", run_id="r1", runs=[],
        evaluation={"sets": {"heldout": {"label": "Held-out", "rows": rows}}},
    )  # fmt: skip
    answers = page.split('class="answers"')[1].split("</table>")[0]
    assert '<em class="muted">(empty answer)</em> <small>F1 0.00</small>' in answers
    assert "&lt;b&gt;cold&lt;/b&gt; gel <small>F1 1.00</small>" in answers  # answers stay escaped
    assert answers.count("F1 ") == 2  # no bare "F1 " for the models that were not asked
