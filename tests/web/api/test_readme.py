"""The README's REST API section stays true: every path it shows is an operation of the served
OpenAPI document, with the method it shows."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

README = Path(__file__).resolve().parents[3] / "README.md"


def _section() -> str:
    return README.read_text().split("### The REST API")[1].split("\n### ")[0]


def _template(path: str) -> re.Pattern[str]:
    """An OpenAPI path as a regex: each {param} matches one segment ({path} of a download: the rest)."""
    pattern = re.sub(r"\\\{path\\\}", ".+", re.escape(path))
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", pattern))


def test_the_curl_lines_call_documented_operations(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    lines = re.findall(r"^curl .*$", _section(), re.M)
    assert len(lines) >= 6
    for line in lines:
        method = "post" if ("-X POST" in line or " -F " in line) else "get"
        path = re.search(r"localhost:8770(/api/[^ ?']*)", line).group(1)  # type: ignore[union-attr]
        matches = [p for p in doc["paths"] if _template(p).fullmatch(path) and method in doc["paths"][p]]
        assert matches, f"README: {method.upper()} {path} is no operation of the API"


def test_the_table_lists_every_operation(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    table = _section()
    for path in doc["paths"]:
        last = path.rstrip("/").split("/")[-1]
        assert last in table, f"README's table does not mention {path}"
