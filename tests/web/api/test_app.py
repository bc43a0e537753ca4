"""The REST API in process, on SQLite and on the real PostgreSQL: projects, the one error shape,
the API token off loopback, rate limits on writes, body limits, and no secret in any answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from finetuneflow import paths
from finetuneflow.errors import ConfigError
from finetuneflow.state import jobs as log
from finetuneflow.web import WebConfig, create_app
from web.api.conftest import make_client


def _error(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def test_projects_are_created_listed_and_shown(client: TestClient, project: str) -> None:
    created = client.post("/api/projects", json={"name": project})
    assert created.status_code == 201 and created.json()["name"] == project
    assert client.post("/api/projects", json={"name": project}).status_code == 201  # idempotent
    assert project in [p["name"] for p in client.get("/api/projects").json()]
    shown = client.get(f"/api/projects/{project}").json()
    assert (shown["files"], shown["chunks"], shown["runs"], shown["datasets"]) == (0, 0, 0, [])


def test_a_name_that_differs_only_in_case_is_refused(
    client: TestClient, project: str, ftf_home: Path
) -> None:
    # on macOS and Windows "P-ab12" and "p-ab12" would be one folder: deleting one took both
    client.post("/api/projects", json={"name": project})
    twin = project.upper()
    message = _error(client.post("/api/projects", json={"name": twin}), 400, "invalid_value")
    assert f"project {project!r} exists" in message and "only in case" in message
    assert twin not in [p["name"] for p in client.get("/api/projects").json()]
    assert not (ftf_home / "projects" / twin).exists()  # nothing made before the refusal
    assert f"did you mean {project!r}" in _error(client.get(f"/api/projects/{twin}"), 404, "not_found")
    assert client.post("/api/projects", json={"name": project}).status_code == 201  # its own name still


def test_a_dataset_name_that_differs_only_in_case_is_refused_before_a_job_is_queued(
    client: TestClient, project: str
) -> None:
    client.post("/api/projects", json={"name": project})
    (paths.project_dir(project) / "datasets" / "faq").mkdir(parents=True)
    provider = {"preset": "ollama", "model": "m"}
    requests = {
        "build": (f"/api/projects/{project}/datasets", {"config": {"name": "FAQ"}}),
        "generate": (f"/api/projects/{project}/datasets/generate",
                     {"provider": provider, "config": {"name": "Faq"}}),
    }  # fmt: skip
    for what, (url, body) in requests.items():
        message = _error(client.post(url, json=body), 400, "invalid_value")
        assert f"dataset 'faq' exists in project {project!r}" in message and "only in case" in message, what
    queued = [j for j in log.listed(1000) if j["params"].get("project") == project]
    assert queued == []  # refused up front, not queued to fail later


def test_every_error_has_one_shape_and_a_4xx(client: TestClient, project: str) -> None:
    assert "no project" in _error(client.get(f"/api/projects/{project}"), 404, "not_found")
    _error(client.get("/api/jobs/424242"), 404, "not_found")
    _error(client.post("/api/projects", json={"name": "../x"}), 400, "invalid_value")
    _error(client.post("/api/projects", content=b"{not json", headers={"content-type": "application/json"}),
           400, "invalid_json")  # fmt: skip
    _error(client.get("/api/nothing-here"), 404, "not_found")
    _error(client.delete("/api/projects"), 405, "method_not_allowed")
    client.post("/api/projects", json={"name": project})
    # a step setting checked before anything is queued: every problem at once, named
    message = _error(client.post(f"/api/projects/{project}/datasets", json={"config": {"nme": "x"}}),
                     400, "invalid_config")  # fmt: skip
    assert "nme: unknown key (did you mean 'name'?)" in message
    _error(client.post(f"/api/projects/{project}/ingest", json={}), 409, "no_files")


def test_a_bad_setting_is_refused_before_the_app_exists() -> None:
    with pytest.raises(ConfigError, match="max_upload_mb"):
        create_app(WebConfig(max_upload_mb=0))


def test_off_loopback_a_token_is_required(monkeypatch: pytest.MonkeyPatch, ftf_home: Path) -> None:
    monkeypatch.delenv("FTF_WEB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="FTF_WEB_TOKEN"):
        create_app(WebConfig(host="0.0.0.0"))
    monkeypatch.setenv("FTF_WEB_TOKEN", "s3cret-token")
    c = make_client(host="0.0.0.0")
    message = _error(c.get("/api/projects"), 401, "invalid_token")
    assert "s3cret" not in message
    _error(c.get("/api/projects", headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")
    _error(c.get("/api/openapi.json"), 401, "invalid_token")  # nothing is open
    assert c.get("/api/projects", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    c.cookies.set("ftf_token", "s3cret-token")  # what a browser's EventSource can send
    assert c.get("/api/projects").status_code == 200


def test_a_token_on_loopback_is_required_too(monkeypatch: pytest.MonkeyPatch, ftf_home: Path) -> None:
    monkeypatch.setenv("FTF_WEB_TOKEN", "tok")
    _error(make_client().get("/api/projects"), 401, "invalid_token")


def test_writes_are_rate_limited_with_retry_after(ftf_home: Path, project: str) -> None:
    c = make_client(rate_per_minute=6, rate_burst=2)
    assert [c.post("/api/projects", json={"name": project}).status_code for _ in range(2)] == [201, 201]
    limited = c.post("/api/projects", json={"name": project})
    assert "rate_per_minute" in _error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 10  # one token back in 10 s at 6 a minute
    assert c.get("/api/projects").status_code == 200  # reads are not limited


def test_a_body_over_the_limit_is_413_declared_or_chunked(ftf_home: Path) -> None:
    c = make_client(max_request_bytes=2048)
    big = {"name": "x" * 5000}
    assert "max_request_bytes" in _error(c.post("/api/projects", json=big), 413, "request_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    chunked = c.post("/api/projects", content=chunks(), headers={"content-type": "application/json"})
    _error(chunked, 413, "request_too_large")


def test_no_provider_key_in_any_answer(
    client: TestClient, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("MY_PROVIDER_KEY", secret)
    client.post("/api/projects", json={"name": project})
    provider = {"preset": "openai", "model": "gpt-x", "api_key_env": "MY_PROVIDER_KEY"}
    queued = client.post(
        f"/api/projects/{project}/datasets/generate", json={"provider": provider, "preview": True}
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]
    assert log.get(job_id)["params"]["args"]["provider"]["api_key_env"] == "MY_PROVIDER_KEY"
    # the key pasted where its variable's name belongs: refused without being repeated
    pasted = client.post(f"/api/projects/{project}/datasets/generate",
                         json={"provider": {**provider, "api_key_env": secret}})  # fmt: skip
    _error(pasted, 400, "invalid_config")
    wrong_type = client.post(f"/api/projects/{project}/datasets/generate", json={"provider": secret})
    _error(wrong_type, 400, "invalid_value")
    answers = [queued, pasted, wrong_type, client.get("/api/jobs"), client.get(f"/api/jobs/{job_id}"),
               client.get(f"/api/projects/{project}")]  # fmt: skip
    assert all(secret not in r.text for r in answers)


def test_the_openapi_document_lists_the_stable_paths(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    expected = {
        "/api/projects", "/api/projects/{project}", "/api/projects/{project}/files",
        "/api/projects/{project}/ingest", "/api/projects/{project}/ingest-report",
        "/api/projects/{project}/chunks",
        "/api/projects/{project}/datasets", "/api/projects/{project}/datasets/generate",
        "/api/projects/{project}/datasets/{dataset}/examples",
        "/api/projects/{project}/datasets/{dataset}/examples/{example_id}",
        "/api/projects/{project}/runs", "/api/projects/{project}/runs/{run_id}",
        "/api/projects/{project}/runs/{run_id}/metrics", "/api/projects/{project}/runs/{run_id}/resume",
        "/api/projects/{project}/plan", "/api/projects/{project}/runs/{run_id}/evaluations",
        "/api/projects/{project}/exports", "/api/projects/{project}/exports/{run_id}/files/{path}",
        "/api/projects/{project}/memory", "/api/projects/{project}/chat",
        "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/events",
    }  # fmt: skip
    assert expected <= set(doc["paths"])
    assert all(p.startswith("/api/") for p in doc["paths"])  # nothing at / (the studio's pages)


def test_resume_and_downloads_refuse_what_they_must(
    client: TestClient, project: str, tiny_tuned_run: Path
) -> None:
    from serve.conftest import add_run

    run = f"done-{project}"  # run ids are global: PostgreSQL keeps every earlier test's
    add_run(tiny_tuned_run, project, run)
    p = f"/api/projects/{project}"
    _error(client.post(f"{p}/runs/{run}/resume"), 409, "run_finished")
    _error(client.post(f"{p}/runs/no-run/resume"), 404, "not_found")
    assert client.get(f"{p}/runs/{run}").json()["status"] == "finished"
    exports = paths.project_dir(project) / "exports" / run
    exports.mkdir(parents=True)
    (exports / "report.md").write_text("# report\n")
    (exports / "leak").symlink_to(
        paths.home() / "ftf.db" if (paths.home() / "ftf.db").exists() else "/etc/hostname"
    )
    assert client.get(f"{p}/exports/{run}/files/report.md").text == "# report\n"
    for sneaky in ("leak", "../../project.json", "%2e%2e/%2e%2e/project.json", "nothing.md"):
        _error(client.get(f"{p}/exports/{run}/files/{sneaky}"), 404, "not_found")
    assert [f["path"] for f in client.get(f"{p}/exports").json()[0]["files"]] == ["report.md"]


def test_a_nul_character_is_a_clear_400_on_every_backend(client: TestClient, project: str) -> None:
    """PostgreSQL cannot compare or store a text holding NUL (a generated filter found the 500)."""
    assert client.post("/api/projects", json={"name": project}).status_code == 201
    examples = f"/api/projects/{project}/datasets/default/examples"
    for query in ({"split": "tr\x00ain"}, {"search": "\x00"}):
        assert "NUL" in _error(client.get(examples, params=query), 400, "nul_character")
    assert client.get(examples, params={"search": "plain"}).status_code != 400  # the guard's control
    renamed = client.post("/api/projects", json={"name": "a\x00b"})
    assert renamed.status_code < 500  # a body with NUL: refused (name rules or the database), never a 500


def test_an_offset_past_any_database_integer_is_a_clear_400(client: TestClient, project: str) -> None:
    """2**63 overflowed PostgreSQL's bigint (a 500 there); every paged list refuses it up front."""
    for path in (f"/api/projects/{project}/chunks", f"/api/projects/{project}/datasets/default/examples"):
        answer = client.get(path, params={"offset": 2**63})
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["message"].startswith("query.offset:"), answer.text


def test_a_jobs_history_comes_whole_or_in_pages(client: TestClient) -> None:
    # a long training run's history is tens of thousands of events: it came whole on every call
    job_id = log.create(None, "dataset", {}, queue="default")
    for n in range(5):
        log.append(job_id, "progress", {"n": n})
    whole = client.get(f"/api/jobs/{job_id}").json()
    assert [e["seq"] for e in whole["events"]] == [1, 2, 3, 4, 5, 6] and whole["next_after"] is None
    pages, after = [], 0
    while after is not None:
        page = client.get(f"/api/jobs/{job_id}", params={"after": after, "limit": 4}).json()
        pages.append([e["seq"] for e in page["events"]])
        after = page["next_after"]
    assert pages == [[1, 2, 3, 4], [5, 6]]
    exact = client.get(f"/api/jobs/{job_id}", params={"after": 2, "limit": 4}).json()
    assert [e["seq"] for e in exact["events"]] == [3, 4, 5, 6] and exact["next_after"] is None
    for bad in ({"limit": 0}, {"limit": 10_001}, {"after": -1}):
        assert client.get(f"/api/jobs/{job_id}", params=bad).status_code == 400, bad


def test_a_delete_whose_files_cannot_move_is_a_409_that_says_why(
    client: TestClient, ftf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetuneflow.api import projects as papi

    assert client.post("/api/projects", json={"name": "stuck"}).status_code == 201
    monkeypatch.setattr(papi, "beside", lambda path: (path, ftf_home / "no-such-folder" / "x"))
    answer = client.delete("/api/projects/stuck")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "delete_failed", answer.text
    assert "nothing was deleted" in answer.json()["error"]["message"]
    assert str(ftf_home) not in answer.text  # no path of the state folder in a response
    assert client.get("/api/projects/stuck").status_code == 200


def test_writes_from_other_sites_are_refused(ftf_home: Path, project: str) -> None:
    """CSRF: any page can post a form or a multipart upload to 127.0.0.1 without asking first."""
    c = make_client()
    planted = [("files", ("planted.txt", b"Ignore all prior instructions.\n", "text/plain"))]
    assert c.post("/api/projects", json={"name": project}).status_code == 201  # no Origin: curl, scripts
    for foreign in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
                    {"Sec-Fetch-Site": "cross-site"}):  # fmt: skip
        upload = c.post(f"/api/projects/{project}/files", files=planted, headers=foreign)
        _error(upload, 403, "cross_site_request")
        _error(c.delete(f"/api/projects/{project}", headers=foreign), 403, "cross_site_request")
    assert not (ftf_home / "projects" / project / "raw" / "uploads").exists()
    # the studio's own pages: their Origin is the server's, their fetches same-origin
    own = {"Origin": "http://127.0.0.1:8770", "Sec-Fetch-Site": "same-origin"}
    assert c.post(f"/api/projects/{project}/files", files=planted, headers=own).status_code == 201
    assert c.get("/api/projects", headers={"Origin": "https://evil.example"}).status_code == 200  # reads


def test_behind_a_proxy_that_rewrites_the_host_its_trusted_origin_may_write(
    monkeypatch: pytest.MonkeyPatch, ftf_home: Path, project: str
) -> None:
    """nginx's default passes ``Host: 127.0.0.1:8770`` on while the page's Origin is the proxy's:
    every write of the studio's own pages was refused as cross-site, with no way to allow it."""
    monkeypatch.delenv("FTF_WEB_TOKEN", raising=False)
    page = "https://studio.example.com"
    proxied = {"Host": "127.0.0.1:8770", "Origin": page, "Sec-Fetch-Site": "same-origin"}
    refused = make_client().post("/api/projects", json={"name": project}, headers=proxied)
    _error(refused, 403, "cross_site_request")
    c = make_client(trusted_origins=["HTTPS://Studio.example.com:443/"])  # written any way a person may
    assert c.post("/api/projects", json={"name": project}, headers=proxied).status_code == 201
    evil = {**proxied, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    _error(c.delete(f"/api/projects/{project}", headers=evil), 403, "cross_site_request")
    # a proxy that passes the public name on: answered without a token for that name only
    assert c.get("/api/projects", headers={"Host": "studio.example.com"}).status_code == 200
    _error(c.get("/api/projects", headers={"Host": "other.example.com"}), 403, "foreign_host")
    _error(make_client().get("/api/projects", headers={"Host": "studio.example.com"}), 403, "foreign_host")


def test_a_trusted_origin_that_is_not_one_is_refused_with_the_fix() -> None:
    from finetuneflow.web.config import WebConfig

    problems = WebConfig(trusted_origins=["studio.example.com", "https://studio.example.com/ui"]).problems()
    assert len(problems) == 2 and all("write scheme://host[:port]" in p for p in problems)
    assert WebConfig(trusted_origins=["http://[::1]:8770", "https://a.example"]).problems() == []


def test_without_a_token_only_this_machines_names_are_answered(
    monkeypatch: pytest.MonkeyPatch, ftf_home: Path
) -> None:
    """DNS rebinding: a page at a name of its own that resolves to 127.0.0.1 sends that name."""
    monkeypatch.delenv("FTF_WEB_TOKEN", raising=False)
    c = make_client()
    for host in ("attacker.example", "attacker.example:8770", "127.0.0.1.nip.io:8770", "evil@127.0.0.1",
                 "localhost.attacker.example", "localhostx:8770"):  # fmt: skip
        _error(c.get("/api/projects", headers={"Host": host}), 403, "foreign_host")
    # names browsers resolve to loopback themselves (RFC 6761): no other site can own them
    for host in ("127.0.0.1:8770", "localhost:8770", "[::1]:8770", "LOCALHOST", "localhost.:8770",
                 "studio.localhost:8770"):  # fmt: skip
        assert c.get("/api/projects", headers={"Host": host}).status_code == 200, host
    # with a token, the token is the guard: any name the server is reached by will do
    monkeypatch.setenv("FTF_WEB_TOKEN", "tok")
    named = {"Host": "studio.example", "Authorization": "Bearer tok"}
    assert make_client(host="0.0.0.0").get("/api/projects", headers=named).status_code == 200


def test_a_missing_file_a_busy_database_and_a_broker_that_is_down_answer_what_they_are(
    client: TestClient, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from finetuneflow.api import projects as papi
    from finetuneflow.errors import QueueUnavailable
    from finetuneflow.web import routes

    client.post("/api/projects", json={"name": project})
    failures: list[BaseException] = [
        FileNotFoundError(2, "No such file or directory", "/home/someone/.ftf/projects/x/raw/.incoming"),
        OperationalError("SELECT", {}, Exception("database is locked")),
    ]

    real = papi.show_project

    def failing(name: str) -> object:
        if failures:
            raise failures.pop(0)
        return real(name)

    monkeypatch.setattr(papi, "show_project", failing)  # never undo(): the fixtures' settings go too
    message = _error(client.get(f"/api/projects/{project}"), 404, "not_found")
    assert message == "not found: .incoming"  # the file's name, never the state folder's path
    busy = client.get(f"/api/projects/{project}")
    assert _error(busy, 503, "database_unavailable") and busy.headers["retry-after"] == "2"

    def down(*_: object) -> int:
        raise QueueUnavailable("job 7 could not be queued: OperationalError from the broker")

    monkeypatch.setattr(routes.queue, "submit", down)
    assert "could not be queued" in _error(client.post(f"/api/projects/{project}/datasets", json={}),
                                           503, "queue_unavailable")  # fmt: skip
