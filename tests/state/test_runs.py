"""A run folder's metrics log (state/runs.py) read beside the training that writes it."""

from __future__ import annotations

import json
from pathlib import Path

from finetuneflow.state import runs as rf


def test_a_metrics_line_still_being_written_is_skipped_by_every_reader(tmp_path: Path) -> None:
    # the studio's chart read metrics.jsonl whole while a worker appended to it: a half-written
    # last line raised (a failed page, a failed browser test), and a resume after a kill mid-line
    # could not truncate the log
    log = rf.MetricsLog(tmp_path / rf.METRICS)
    for step in (1, 2, 3):
        log.write(step=step, loss=3.0 - step / 10)
    complete = (tmp_path / rf.METRICS).read_text()
    (tmp_path / rf.METRICS).write_text(complete + json.dumps({"step": 4, "loss": 2.6})[:17])
    assert [m["step"] for m in rf.read_metrics(tmp_path)] == [1, 2, 3]
    rf.truncate_metrics(tmp_path, 2)  # a resume from step 2
    assert [m["step"] for m in rf.read_metrics(tmp_path)] == [1, 2]
    assert (tmp_path / rf.METRICS).read_text().endswith("\n")
    assert rf.read_metrics(tmp_path / "no-run") == []
