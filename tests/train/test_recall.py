"""The knowledge goal's recall probe: early stopping on answer F1 keeps the best checkpoint; the
forgetting guard stops a run and never keeps a checkpoint past it; replay text stays apart from
the text the guard and the forgetting check measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetuneflow.evaluate.forgetting import paragraphs
from finetuneflow.evaluate.sets import general_text
from finetuneflow.state import runs as rf
from finetuneflow.train.config import RecallSettings, TrainConfig
from finetuneflow.train.recall import RecallProbe, guard_paragraphs, replay_paragraphs, replay_records

from .helpers import knowledge_dataset


def _run(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, f1s: list[float],
         guard: list[float] | None = None) -> dict[str, Any]:  # fmt: skip
    from finetuneflow.train import recall
    from finetuneflow.train.step import train

    real_track = RecallProbe.track
    seen: list[int] = []

    def track(self: RecallProbe, loop: Any, state: Any, log: Any) -> bool:
        seen.append(state.step)
        return real_track(self, loop, state, log)

    def measure(self: RecallProbe, loop: Any) -> tuple[float, float | None]:
        k = len(seen) - 1
        return f1s[k], (guard[k] if guard else 2.0)

    monkeypatch.setattr(recall.RecallProbe, "track", track)
    monkeypatch.setattr(recall.RecallProbe, "measure", measure)
    cfg = TrainConfig(
        base_model=str(tiny_model), goal="knowledge", max_len=64, max_steps=2 * (len(f1s) - 1),
        precision="fp32", threads=1, learning_rate=1e-2, batch_size=2, grad_accum=1,
        recall=RecallSettings(every=2, patience=2, questions=2, max_new_tokens=4, replay=0.0),
    )  # fmt: skip
    events: list[Any] = []
    summary = train(knowledge_dataset(tmp_path / "ds"), tmp_path / "run", cfg, events.append)
    return summary | {"probed": seen, "eta": [e.message for e in events if e.stage == "eta"]}


def _trained(run_dir: Path) -> dict[str, Any]:
    from finetuneflow.models.load import load_tuned

    model = load_tuned(run_dir).model
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_recall_early_stopping_keeps_the_best_checkpoint(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    summary = _run(tmp_path, tiny_model, monkeypatch, [0.1, 0.3, 0.6, 0.5, 0.55, 0.9])
    # probes at steps 0, 2, 4, 6, 8: the best is step 4; two probes without a better F1 stop the run
    assert summary["probed"] == [0, 2, 4, 6, 8]
    # the ETA is said before the start (priors), then again with the base's probe timed
    assert len(summary["eta"]) == 2 and "s a probe" in summary["eta"][0]
    assert "a probe took 0 s here" in summary["eta"][1] and "10 steps" in summary["eta"][1]
    assert summary["status"] == "early_stopped" and summary["best_step"] == 4 and summary["steps"] == 8
    assert summary["recall_f1"] == 0.6 and "did not improve" in summary["stop_reason"]
    best = load_file(str(tmp_path / "run" / "checkpoints" / "step-000004" / "weights.safetensors"))
    kept = _trained(tmp_path / "run")
    assert kept and best
    for name, tensor in best.items():
        assert torch.equal(kept[name], tensor), name
    last = load_file(str(tmp_path / "run" / "checkpoints" / "step-000008" / "weights.safetensors"))
    assert any(not torch.equal(kept[n], t) for n, t in last.items())  # the last step is not what was kept
    logged = [m for m in rf.read_metrics(tmp_path / "run") if "recall_f1" in m]
    assert [m["step"] for m in logged] == [0, 2, 4, 6, 8]


def test_the_forgetting_guard_stops_and_never_keeps_a_checkpoint_past_it(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # guard loss 2.0 -> 2.05 (+5%) -> 2.2 (+22%, past the 10% guard) although F1 is best there
    summary = _run(tmp_path, tiny_model, monkeypatch, [0.1, 0.4, 0.9, 0.95], guard=[2.0, 2.05, 2.2, 2.3])
    assert summary["probed"] == [0, 2, 4] and summary["best_step"] == 2 and summary["recall_f1"] == 0.4
    assert summary["stop_reason"].startswith("forgetting guard")


def test_a_run_whose_every_trained_probe_is_past_the_guard_keeps_the_base(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    summary = _run(tmp_path, tiny_model, monkeypatch, [0.1, 0.9, 0.9, 0.9], guard=[2.0, 2.5, 2.6, 2.7])
    assert summary["best_step"] == 0 and summary["steps"] == 2 and summary["recall_f1"] is None
    lora_b = [t for n, t in _trained(tmp_path / "run").items() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(t) == 0 for t in lora_b)  # B starts at zero: the base itself


def test_a_trained_probe_within_the_guard_is_kept_even_below_the_base_score(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _run(tmp_path, tiny_model, monkeypatch, [0.5, 0.2, 0.1, 0.0])
    assert summary["best_step"] == 2 and summary["recall_f1"] == 0.2  # training was asked for


def test_replay_guard_and_forgetting_check_texts_are_disjoint() -> None:
    replay, guard = set(replay_paragraphs()), set(guard_paragraphs())
    measured = set(paragraphs(general_text()))
    assert replay and guard and not replay & guard and not (replay | guard) & measured
    records = replay_records(40, 0.25)
    assert len(records) == 10 and all(r["text"] in replay for r in records)
    assert replay_records(40, 0.0) == []
