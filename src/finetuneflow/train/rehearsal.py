"""Self-rehearsal: the knowledge goal trains on the base model's own answers beside the user's data.

Fine-tuning a small model on new facts at the knowledge goal's learning rate makes ordinary text
less likely (the forgetting guard stops such runs early). Before the first step, the base model
(adapters off) answers general prompts shipped with the package (``data/rehearsal_prompts.txt``)
by sampling from its whole distribution; those answers become chat examples mixed into the training
rows. Learning to say what the base already says costs nothing where the model has not moved, and
pulls it back where it has: the expected gradient of the loss on the base's own samples is the
gradient of KL(base || tuned). Unlike replaying human prose (``recall.replay``), which is written
like the guard's text and so hides forgetting from it, these answers share nothing with the guard's
or the forgetting check's text.

The answers are kept in the run folder (``rehearsal.jsonl``): a resumed run trains on the same
ones, and the folder shows what the model rehearsed.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from finetuneflow import hardware
from finetuneflow.models.generate import DECODE_BATCH, Sampling, generate_replies
from finetuneflow.models.load import eval_mode

__all__ = ["FILE", "MAX_ANSWERS", "prompts", "records"]

FILE = "rehearsal.jsonl"
MAX_ANSWERS = 96  # generated at most; more rehearsal rows cycle through them (generation costs minutes)
MAX_NEW_TOKENS = 160  # ~125 words: long enough to be ordinary prose, short enough to generate quickly


def prompts() -> list[str]:
    """The shipped general prompts, one a line (``#`` lines are comments)."""
    text = (resources.files("finetuneflow.train") / "data" / "rehearsal_prompts.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def records(
    model: Any, tokenizer: Any, count: int, seed: int, device: str, dtype: Any, run_dir: Path
) -> list[dict[str, Any]]:
    """``count`` chat examples of the base model answering general prompts: read from the run
    folder when it has them (a resumed run), else generated (adapters off) and written there."""
    path = run_dir / FILE
    if path.is_file():
        answers = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        answers = _generate(model, tokenizer, min(count, MAX_ANSWERS), seed, device, dtype)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
        tmp.replace(path)  # atomic: a killed run never leaves half a file for its resume to read
    if not answers:
        return []
    return [{**answers[i % len(answers)], "id": f"rehearsal-{i}"} for i in range(count)]


def _generate(
    model: Any, tokenizer: Any, count: int, seed: int, device: str, dtype: Any
) -> list[dict[str, Any]]:
    pool = prompts()
    asked = [pool[i % len(pool)] for i in range(count)]
    sampling = Sampling(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, top_p=1.0, seed=seed)
    conversations = [[{"role": "user", "content": p}] for p in asked]
    with eval_mode(model), _adapters_off(model), hardware.autocast(device.split(":")[0], dtype):
        answers = generate_replies(model, tokenizer, conversations, MAX_NEW_TOKENS, DECODE_BATCH, sampling)
    pairs = [(p, a) for p, a in zip(asked, answers, strict=True) if a]  # an empty answer teaches nothing
    return [
        {
            "source": "rehearsal",
            "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
        }
        for p, a in pairs
    ]


def _adapters_off(model: Any) -> Any:
    """The base model's own behaviour: peft's context that disables the adapters, or nothing for a
    full fine-tune (whose weights are still the base's before the first step)."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else nullcontext()
