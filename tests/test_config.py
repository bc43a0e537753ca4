import pytest

from finetuneflow.config import ConfigError, field_help, from_dict
from finetuneflow.dataset.build import DatasetConfig
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
        from_dict(TrainConfig, {"max_len": 8, "batch_size": 0, "learning_rate": 3.0, "lora_dropout": 1.5})
    keys = {e.split(":")[0] for e in err.value.errors}
    assert {"max_len", "batch_size", "learning_rate", "lora_dropout"} <= keys


def test_types_checked_before_values() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"epochs": "three", "precision": "int3", "use_text": 1})
    assert len(err.value.errors) == 3
    assert any("precision: expected one of" in e for e in err.value.errors)


def test_export_formats_validated() -> None:
    with pytest.raises(ConfigError, match="unknown \\['gguf9'\\]"):
        from_dict(ExportConfig, {"formats": ["adapter", "gguf9"]})
