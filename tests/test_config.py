"""Settings: every config class in the package (found, not listed) is documented, valid by default
and strict about keys; then from_dict's error reporting on TrainConfig."""

import dataclasses
import importlib
import pkgutil
import re
import tomllib
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import finetuneflow
from finetuneflow.config import field_help, from_dict, setting
from finetuneflow.errors import ConfigError
from finetuneflow.export.step import ExportConfig
from finetuneflow.train.config import TrainConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Modules that import with the core dependencies alone; and the step configs discovery must find.
CORE = ("finetuneflow.config", "finetuneflow.api", "finetuneflow.cli")
STEP_CONFIGS = {"IngestConfig", "DatasetConfig", "TrainConfig", "EvalConfig", "ExportConfig"}
# Settings that have no default on purpose: {class name: the least data that makes them valid}.
REQUIRED = {"ProviderConfig": {"model": "test-model"}}  # which model the server runs is the user's


def optional_imports() -> set[str]:
    """Import names of the optional extras (train, qlora, onnx; not dev): their absence may skip
    a module. Every extra's distribution name is also its import name."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    reqs = [req for extra, listed in extras.items() if extra != "dev" for req in listed]
    return {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("-", "_") for req in reqs}


def import_all() -> tuple[list[ModuleType], dict[str, str], dict[str, str]]:
    """Every module under finetuneflow; {module: missing extra} for those an absent optional extra
    stops; {module: error} for any other failure (a broken module, or a core dependency missing)."""
    optional = optional_imports()
    modules: list[ModuleType] = []
    skipped: dict[str, str] = {}
    broken: dict[str, str] = {}
    # walk_packages yields a package before importing it to descend: the loop below sees its error
    for info in pkgutil.walk_packages(finetuneflow.__path__, "finetuneflow.", onerror=lambda _name: None):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError as err:
            missing = (err.name or "").split(".")[0]
            if missing in optional:
                skipped[info.name] = missing
            else:
                broken[info.name] = f"{type(err).__name__}: {err}"
        except Exception as err:  # a module that fails at import time for any reason is broken
            broken[info.name] = f"{type(err).__name__}: {err}"
    return modules, skipped, broken


def is_config(cls: Any) -> bool:
    """A settings dataclass: built by from_dict, so it has setting()/section() fields (help in their
    metadata), a problems() check, or a *Config/*Settings name; any one of them marks it."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return False
    return (
        any("help" in f.metadata for f in dataclasses.fields(cls))
        or callable(getattr(cls, "problems", None))
        or cls.__name__.endswith(("Config", "Settings"))
    )


def find_configs(modules: list[ModuleType]) -> list[type]:
    """Config classes defined in ``modules``, and the sections (nested settings) they hold."""
    found: dict[type, None] = {}
    todo = [obj for m in modules for obj in vars(m).values()
            if is_config(obj) and obj.__module__ == m.__name__]  # fmt: skip
    while todo:
        cls = todo.pop()
        if cls not in found:
            found[cls] = None
            todo += [h for h in typing.get_type_hints(cls).values() if isinstance(h, type) and
                     dataclasses.is_dataclass(h)]  # fmt: skip
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def undocumented(cls: type) -> list[str]:
    """Fields without help text, and '(class docstring)' when the class has none of its own."""
    missing = [name for name, text in field_help(cls).items() if not text.strip()]
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature
        missing.append("(class docstring)")
    return missing


MODULES, SKIPPED, BROKEN = import_all()
CONFIGS = find_configs(MODULES)


def test_every_module_imports_and_the_step_configs_are_found() -> None:
    assert BROKEN == {}, "\n".join(f"{m}: {e}" for m, e in BROKEN.items())
    assert not set(CORE) & set(SKIPPED), SKIPPED  # these need no extra at all
    assert {m.__name__ for m in MODULES} >= set(CORE)
    assert {c.__name__ for c in CONFIGS} >= STEP_CONFIGS | set(REQUIRED), CONFIGS


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__qualname__)
def test_defaults_are_valid_and_every_field_documented(cls: type) -> None:
    required = REQUIRED.get(cls.__name__, {})
    if required:  # without them, exactly those keys are named
        with pytest.raises(ConfigError) as err:
            from_dict(cls, {})
        assert [e.split(":")[0] for e in err.value.errors] == list(required)
    from_dict(cls, required)
    assert undocumented(cls) == [], field_help(cls)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__qualname__)
def test_unknown_keys_are_rejected(cls: type) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(cls, {"no_such_setting": 1})
    assert len(err.value.errors) == 1 and err.value.errors[0].startswith("no_such_setting: unknown key (")


def test_a_config_with_an_undocumented_field_is_found_and_named() -> None:
    @dataclasses.dataclass
    class HalfDocumented:
        """Settings with one field documented and one not."""

        a: int = setting(1, "Documented.")
        b: int = 2

    @dataclasses.dataclass
    class BareConfig:
        c: int = 3

    assert is_config(HalfDocumented) and undocumented(HalfDocumented) == ["b"]
    assert is_config(BareConfig) and undocumented(BareConfig) == ["c", "(class docstring)"]


def test_unknown_key_suggests_the_near_one() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(TrainConfig, {"learning_rte": 1e-4})
    assert "learning_rte: unknown key (did you mean 'learning_rate'?)" in str(err.value)


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            TrainConfig,
            {"max_len": 8, "batch_size": -1, "learning_rate": 3.0, "lora": {"dropout": 1.5}},
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
