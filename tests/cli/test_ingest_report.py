"""`ftf ingest` prints a line per input with its whole path and reason, even piped at 80 columns,
and `ftf ingest-report` shows the JSON report it wrote into the project folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from finetuneflow.cli import app, common

runner = CliRunner()


def test_report_lines_are_whole_in_a_narrow_log(
    tiny_model: Path, ftf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "console", Console(width=80, force_terminal=False, color_system=None))
    monkeypatch.setattr("finetuneflow.cli.ingest.console", common.console)
    deep = tmp_path / "in" / ("a-folder-with-a-rather-long-name-" * 2) / "and-another-level-below-it"
    deep.mkdir(parents=True)
    good = deep / "notes-about-the-cabinet-heater-and-its-firmware-upgrade.md"
    good.write_text("# Heater\n\nThe cabinet heater needs the firmware upgrade before winter starts.")
    (deep / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")  # a link back into the folder
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), "-p", "p", "--model", str(tiny_model)])
    assert result.exit_code == 1, result.output  # the broken PDF failed
    lines = result.output.splitlines()
    rel = good.relative_to(tmp_path)
    ingested = [line for line in lines if str(rel) in line]
    assert len(ingested) == 1 and ingested[0].startswith("ingested") and len(ingested[0]) > 80
    failed = next(line for line in lines if "broken.pdf" in line and line.startswith("failed"))
    assert "re-export it from the original application" in failed  # the whole reason, not cut
    assert any(line.startswith("skipped") and "in/loop" in line and "not followed" in line for line in lines)

    data = json.loads(runner.invoke(app, ["ingest-report", "-p", "p", "--json"]).output)
    assert (ftf_home / "projects" / "p" / "ingest-report.json").is_file()
    by_path = {f["path"]: f for f in data["files"]}
    assert by_path[str(rel)]["status"] == "ingested" and by_path[str(rel)]["chunks"] == 1
    assert by_path["in/loop"]["status"] == "skipped"
    assert data["counts"] == {"ingested": 1, "failed": 1, "skipped": 1}
    assert set(by_path[str(rel)]) >= {"status", "chunks", "problems", "dropped", "notes"}
    shown = runner.invoke(app, ["ingest-report", "-p", "p"]).output
    assert failed in shown.splitlines()


def test_report_of_a_project_never_ingested() -> None:
    result = runner.invoke(app, ["ingest-report", "-p", "nothing"])
    assert result.exit_code != 0 and "ftf" in result.output
