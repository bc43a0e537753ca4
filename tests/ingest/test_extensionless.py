"""Files without an extension: a repository's Makefile, LICENSE and scripts are read by what their
name or ``#!`` line says; a program in ``bin/`` is skipped, so the folder ingests without a failure."""

from __future__ import annotations

from pathlib import Path

from finetuneflow import api
from finetuneflow.ingest.config import IngestConfig
from finetuneflow.ingest.sniff import extensionless

from .test_streaming import _chunks

SCRIPT = (
    '#!/usr/bin/env python3\ndef greet(name):\n    """Say hello to someone."""\n    return "hi " + name\n'
)


def _repo(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "Makefile").write_text("test:\n\tpytest -q\n\nlint:\n\truff check .\n")
    (root / "Dockerfile").write_text("FROM python:3.12-slim\nRUN pip install finetuneflow\n")
    (root / "LICENSE").write_text(
        "MIT License\n\nPermission is hereby granted, free of charge, to any person.\n"
    )
    (root / "bin" / "greet").write_text(SCRIPT)
    (root / "bin" / "tool").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    (root / "notes.md").write_text("# Notes\n\nThe build runs `make test`.\n")
    return root


def test_a_repository_folder_ingests_without_a_failure(tiny_model: Path, tmp_path: Path) -> None:
    report = api.ingest([_repo(tmp_path / "repo")], "p", IngestConfig(tokenizer=str(tiny_model), workers=1))
    status = {f.path.removeprefix("repo/"): (f.status, f.problems) for f in report.files}
    assert status["bin/tool"] == ("skipped", ["binary data without an extension (a program?)"])
    assert all(s == "ingested" for name, (s, _) in status.items() if name != "bin/tool"), status
    chunks = {p.removeprefix("repo/"): rows for p, rows in _chunks("p").items()}
    meta = {name: rows[0][8] for name, rows in chunks.items()}  # (idx, kind, text, ..., meta, ...)
    assert meta["Makefile"]["language"] == "make" and meta["Dockerfile"]["language"] == "dockerfile"
    assert meta["bin/greet"]["language"] == "python" and "language" not in (meta["LICENSE"] or {})
    assert "\tpytest -q" in chunks["Makefile"][0][2]  # code is kept as written: the tab matters
    assert any(row[1] == "qa" and "Say hello to someone." in row[2] for row in chunks["bin/greet"])


def test_a_name_or_a_hashbang_says_the_type() -> None:
    assert [extensionless(n, b"x") for n in ("Makefile", "GNUmakefile", "Dockerfile", "Gemfile")] == [
        ".mk", ".mk", ".dockerfile", ".rb",
    ]  # fmt: skip
    heads = [
        b"#!/bin/bash\necho",
        b"#!/usr/bin/env python3.12\n",
        b"#!/usr/bin/node",
        b"#!/usr/bin/env",
        b"#!",
    ]
    assert [extensionless("run", h) for h in heads] == [".sh", ".py", ".js", ".txt", ".txt"]
    assert extensionless("LICENSE", b"MIT License") == ".txt"
