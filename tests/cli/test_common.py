"""The one flags-over-config-file function every command uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetuneflow.cli.common import settings
from finetuneflow.errors import ConfigError
from finetuneflow.train.config import TrainConfig


def test_flags_given_win_over_the_file_and_flags_not_given_leave_it(tmp_path: Path) -> None:
    file = tmp_path / "train.json"
    file.write_text(json.dumps({"epochs": 1.0, "batch_size": 4, "lora": {"r": 8, "alpha": 64}}))
    cfg = settings(TrainConfig, file, batch_size=1, max_len=None, lora={"r": None, "dora": True})
    assert (cfg.epochs, cfg.batch_size, cfg.max_len) == (1.0, 1, 512)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dora) == (8, 64, True)  # a section merges key by key
    assert settings(TrainConfig, None, lora={"r": None}).lora.r == 16  # an empty section is not given


def test_a_key_reads_one_part_of_the_file(tmp_path: Path) -> None:
    file = tmp_path / "generate.json"
    file.write_text(json.dumps({"provider": {"model": "m"}, "train": {"epochs": 2.0, "max_len": 64}}))
    assert settings(TrainConfig, file, "train", max_len=128).epochs == 2.0
    assert settings(TrainConfig, file, "train", max_len=128).max_len == 128
    assert settings(TrainConfig, file, "evaluate") == TrainConfig()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings(TrainConfig, None, batch_size=-1, lora={"r": 0}, epochs="x")
    assert len(err.value.errors) == 1 and "epochs" in err.value.errors[0]  # types first, then values
    with pytest.raises(ConfigError) as err:
        settings(TrainConfig, None, batch_size=-1, lora={"r": 0})
    assert {e.split(":")[0] for e in err.value.errors} == {"batch_size", "lora.r"}
