import json
from collections import Counter
from pathlib import Path

from finetuneflow.dataset.build import DatasetConfig, Unit, build, make_examples, split_examples


def qa(i: int) -> Unit:
    msgs = [
        {"role": "user", "content": f"What is code E{i}?"},
        {"role": "assistant", "content": f"Fault {i}."},
    ]
    return Unit("qa", "qa.csv", f"Q{i}", 10, msgs)


def units() -> list[Unit]:
    text = Unit("text", "h.md", "A long enough paragraph about the product. " * 5, 40)
    return [qa(i) for i in range(40)] + [text, qa(3), Unit("text", "h.md", "tiny", 2)]


def test_duplicates_and_short_chunks_are_counted_not_silently_dropped() -> None:
    drops: Counter[str] = Counter()
    examples = make_examples(units(), DatasetConfig(), drops)
    assert len(examples) == 41
    assert drops == {"exact duplicate": 1, "text shorter than min_text_tokens": 1}


def test_split_is_deterministic_and_independent_of_order() -> None:
    cfg = DatasetConfig()
    exs = make_examples(units(), cfg, Counter())
    a = split_examples(exs, cfg)
    b = split_examples(list(reversed(exs)), cfg)
    assert [e.id for e in a["eval"]] == [e.id for e in b["eval"]]
    assert 2 <= len(a["eval"]) <= 12  # ~15% of 40 chat examples
    assert all(e.kind == "chat" for e in a["eval"])  # text chunks all train by default
    other = split_examples(exs, DatasetConfig(seed=7))
    assert {e.id for e in other["eval"]} != {e.id for e in a["eval"]}


def test_system_prompt_added_where_missing() -> None:
    (ex,) = make_examples([qa(1)], DatasetConfig(system_prompt="Be brief."), Counter())
    assert ex.messages is not None and ex.messages[0] == {"role": "system", "content": "Be brief."}


def test_written_jsonl_loads_with_hf_datasets(tmp_path: Path) -> None:
    import datasets

    manifest = build(units(), tmp_path / "ds", DatasetConfig())
    assert manifest["counts"]["chat/train"] + manifest["counts"]["chat/eval"] == 40
    ds = datasets.load_dataset(
        "json",
        data_files={
            "train": str(tmp_path / "ds/chat/train.jsonl"),
            "eval": str(tmp_path / "ds/chat/eval.jsonl"),
        },
    )
    assert ds["train"][0]["messages"][0]["role"] == "user"
    text = datasets.load_dataset("json", data_files=str(tmp_path / "ds/text/train.jsonl"))["train"]
    assert text.column_names == ["id", "source", "text"]
    saved = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert set(saved["files"]) == {
        "chat/train.jsonl",
        "chat/eval.jsonl",
        "text/train.jsonl",
        "text/eval.jsonl",
    }
