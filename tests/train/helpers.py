"""A small chat dataset in the on-disk layout, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from finetuneflow.state.datasets import split_path, write_jsonl


def chat_dataset(root: Path, n: int = 12) -> Path:
    """``n`` one-turn chats for train and one for eval under ``root`` (returns ``root``)."""

    def chat(i: int) -> dict[str, object]:
        msgs = [
            {"role": "user", "content": f"What is E{i}?"},
            {"role": "assistant", "content": f"Fault {i}: the printer cover is open."},
        ]
        return {"id": str(i), "source": "t", "messages": msgs}

    write_jsonl(split_path(root, "chat", "train"), [chat(i) for i in range(n)])
    write_jsonl(split_path(root, "chat", "eval"), [chat(99), chat(98)])
    return root


def knowledge_dataset(root: Path) -> Path:
    """Twelve questions on four error codes (four facts, three examples each) and one document text:
    a dataset the knowledge goal trains on."""
    chats = [
        {"id": str(i), "source": "manual.md", "fact": f"f{i % 4}", "messages": [
            {"role": "user", "content": f"What does code E{i % 4} mean?"},
            {"role": "assistant", "content": f"E{i % 4} means the lid is open."}]}
        for i in range(12)
    ]  # fmt: skip
    write_jsonl(split_path(root, "chat", "train"), chats)
    write_jsonl(split_path(root, "text", "train"), [{"id": "d", "source": "manual.md", "text": "E1: lid."}])
    write_jsonl(split_path(root, "chat", "eval"), chats[:1])
    return root


def tiny_run(root: Path, model: Path, steps: int = 2) -> Path:
    """A tiny LoRA run on :func:`chat_dataset`, trained ``steps`` steps at a high learning rate (its
    B matrices clearly non-zero); returns the run folder ``root / "run"``."""
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.step import train

    cfg = TrainConfig(
        base_model=str(model), max_len=64, max_steps=steps, precision="fp32", threads=1, learning_rate=1e-2
    )
    train(chat_dataset(root / "ds"), root / "run", cfg)
    return root / "run"
