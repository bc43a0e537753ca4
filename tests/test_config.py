import pytest

from finetuneflow.config import ConfigError, field_help, from_dict
from finetuneflow.dataset.convert import DatasetConfig
from finetuneflow.evaluate.evaluate import EvalConfig
from finetuneflow.export.export import ExportConfig
from finetuneflow.ingest.step import IngestConfig
from finetuneflow.train.config import TrainConfig

ALL = [TrainConfig, DatasetConfig, IngestConfig, EvalConfig, ExportConfig]


@pytest.mark.parametrize("cls", ALL)
def test_defaults_are_valid_and_every_field_documented(cls: type) -> None:
    from_dict(cls, {})
    assert all(text.strip() for text in field_help(cls).values()), field_help(cls)


def test_unknown_key_suggests_the_near_one() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"learning_rte": 1e-4})
    assert "learning_rte: unknown key (did you mean 'learning_rate'?)" in str(err.value)


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            TrainConfig,
            {"max_len": 8, "batch_size": 0, "learning_rate": 3.0, "lora": {"dropout": 1.5}},
        )
    keys = {e.split(":")[0] for e in err.value.errors}
    assert {"max_len", "batch_size", "learning_rate", "lora.dropout"} <= keys


def test_unknown_key_in_a_section_is_named_with_its_section() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"lora": {"rank": 4, "alpha": "x"}, "checkpoints": 3})
    assert any(e.startswith("lora.rank: unknown key (known keys: r, alpha") for e in err.value.errors)
    assert "lora.alpha: expected int, got 'x'" in err.value.errors
    assert "checkpoints: expected CheckpointSettings, got 3" in err.value.errors


def test_nested_section_value_checks_are_listed_once_with_their_prefix() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"lora": {"dropout": 1.5}, "checkpoints": {"keep_last": 0}})
    assert err.value.errors == [
        "lora.dropout: must be in [0, 1)",
        "checkpoints.keep_last: must be >= 1 (the newest checkpoint is what --resume continues)",
    ]
    cfg = from_dict(TrainConfig, {"lora": {"r": 8, "rslora": True}})
    assert cfg.lora.r == 8 and cfg.lora.rslora and cfg.lora.alpha == 32


def test_types_checked_before_values() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"epochs": "three", "precision": "int3", "use_text": 1})
    assert len(err.value.errors) == 3
    assert any("precision: expected one of" in e for e in err.value.errors)


def test_export_formats_validated() -> None:
    with pytest.raises(ConfigError, match="unknown \\['gguf9'\\]"):
        from_dict(ExportConfig, {"formats": ["adapter", "gguf9"]})
