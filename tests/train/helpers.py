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
