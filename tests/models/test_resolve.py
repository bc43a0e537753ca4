from pathlib import Path

import pytest

from finetuneflow.errors import ModelError
from finetuneflow.models.convert import SOURCE_FILE, convert_gguf
from finetuneflow.models.resolve import default_gguf, resolve_model


def test_local_folder_resolves(tiny_model: Path) -> None:
    assert resolve_model(str(tiny_model)) == tiny_model.resolve()


def test_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="pickle weights"):
        resolve_model(str(tmp_path))


def test_unknown_names_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot find a model called 'no-such-model'"):
        resolve_model("no-such-model")
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="not in the local cache"):
        resolve_model("some-org/not-cached-anywhere")


@pytest.mark.slow
def test_default_model_converts_once_and_loads(default_model: Path) -> None:
    """The shipped GGUF becomes a safetensors folder that trains; the quantization flag is gone."""
    import json

    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_model("smollm2-135m-instruct")
    assert folder == default_model  # the session's conversion, found as converted: none here
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / SOURCE_FILE).read_text())["kind"] == "gguf"
    assert getattr(AutoConfig.from_pretrained(folder), "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert convert_gguf(default_gguf()) == folder  # cached: same folder, no second conversion
