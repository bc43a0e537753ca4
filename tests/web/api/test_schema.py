"""Property tests from the OpenAPI document (schemathesis): on a fixture project with chunks, a
built dataset and its examples, every operation is called with generated inputs, valid and not;
no answer may be a 5xx or break the document (status, content type, body schema). A bounded
number of examples per operation keeps it to seconds. Left out: the event stream (endless while a
queued job waits for a worker no test starts; tests/web/api/test_events.py covers it), and the
operations that load a model (chat, plan, the memory's embedder: seconds each, covered elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from conftest import QUICKSTART
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from finetuneflow import api
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.web import WebConfig, create_app
from web.api.conftest import LOCAL_URL

EXAMPLES = 5
SKIPPED = r".*(/events|/chat|/plan|/memory.*)$"


@pytest.fixture
def fixture_project(database: str, project: str, tiny_model: Path) -> str:
    name = project  # a fresh name: PostgreSQL keeps every earlier run's projects
    api.ingest([QUICKSTART / "data"], name, IngestConfig(tokenizer=str(tiny_model)))
    api.build_dataset(name)
    return name


def test_no_operation_answers_5xx_or_off_its_schema(fixture_project: str) -> None:
    app = create_app(WebConfig(rate_per_minute=1e6, rate_burst=10**6))
    config = schemathesis.Config.from_dict(
        {"parameters": {"path.project": fixture_project, "path.dataset": "default"}}
    )
    # on a local name (the default, testserver, is foreign to a studio without a token: SiteGuard)
    local = {"Host": "127.0.0.1:8770"}
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app, config=config, headers=local)
    schema = schema.exclude(path_regex=SKIPPED)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: schemathesis.Case) -> None:
            # the fixture's names in most cases (generated names would only ever meet 404s)
            params = case.path_parameters or {}
            if params.get("project") and hash(params["project"]) % 4:
                params["project"] = fixture_project
                if params.get("dataset"):
                    params["dataset"] = "default"
            # every check but "schema-valid data is accepted": a schema cannot say that files must
            # be uploaded before an ingest (409), that a deleted example is restored before it is
            # edited (400), or which bytes ingest can read (415); those answers are right
            case.call_and_validate(excluded_checks=[positive_data_acceptance], base_url=LOCAL_URL)

        call()


def test_an_edit_holding_a_nul_character_round_trips(fixture_project: str) -> None:
    """NUL is refused in addresses (PostgreSQL cannot compare a text with one), but an example's
    messages are JSON, which holds it on both backends: the edit is kept exactly."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(WebConfig()), base_url=LOCAL_URL)
    examples = f"/api/projects/{fixture_project}/datasets/default/examples"
    first = client.get(examples).json()["items"][0]
    answer = client.patch(f"{examples}/{first['id']}", json={"answer": "fine\x00print"})
    assert answer.status_code == 200, answer.text
    assert client.get(f"{examples}/{first['id']}").json()["answer"] == "fine\x00print"
