"""A tiny trained run whose dataset has every split the evaluation reads (train, eval, heldout)."""

from __future__ import annotations

from pathlib import Path

from train.helpers import chat_dataset  # tests/ is on sys.path (tests/conftest.py)

from finetuneflow.state.datasets import split_path, write_jsonl


def heldout_rows(n: int = 3) -> list[dict[str, object]]:
    """Closed-book questions about the training material, worded as the dataset step writes them."""
    return [
        {
            "id": f"h{i}",
            "source": "t",
            "messages": [
                {"role": "user", "content": f"Which fault does code E{i} report?"},
                {"role": "assistant", "content": f"Fault {i}: the printer cover is open."},
            ],
        }
        for i in range(n)
    ]


def tiny_run(root: Path, model: Path) -> Path:
    """Train the tiny model 4 steps on a 12-row dataset with eval and heldout splits; the run folder."""
    from finetuneflow.train.config import TrainConfig
    from finetuneflow.train.step import train

    dataset = chat_dataset(root / "ds")
    write_jsonl(split_path(dataset, "chat", "heldout"), heldout_rows())
    cfg = TrainConfig(
        base_model=str(model), max_len=64, max_steps=4, precision="fp32", threads=1, learning_rate=1e-2
    )
    train(dataset, root / "run", cfg)
    return root / "run"
