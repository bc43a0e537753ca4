"""Settings of the evaluation step: which questions, how much to generate, how to decide."""

from __future__ import annotations

from dataclasses import dataclass

from finetuneflow.config import setting
from finetuneflow.models.generate import DECODE_BATCH

MEMORY_MODES = ("auto", "on", "off")


@dataclass
class EvalConfig:
    """What to compare, on which questions, and how the better/same/worse verdict is decided.

    Defaults keep ``make demo`` short: about 34 greedy answers per model, generated in batches.
    """

    answers: int = setting(
        8,
        "Questions per set (eval split, closed-book held-out questions) that both models answer "
        "greedily and that are scored (0 = losses only).",
    )
    recall: int = setting(
        8,
        "Training questions sampled for the recall probe, scored the same way: what the model "
        "memorised, shown apart from questions it never saw (0 = no probe).",
    )
    forgetting: bool = setting(
        True,
        "Forgetting check: perplexity on the general text shipped with FineTuneFlow and answers to its "
        "general questions, base vs tuned.",
    )
    max_new_tokens: int = setting(64, "Longest generated answer, in tokens.")
    gen_batch: int = setting(
        DECODE_BATCH,
        "Questions answered at once in one batched greedy generation (fewer when their prompts are "
        "long: models/generate.py batches).",
    )
    seed: int = setting(0, "Seed of the question samples and of the bootstrap behind the verdict.")
    resamples: int = setting(2000, "Bootstrap resamples of the per-question F1 differences (the verdict).")
    confidence: float = setting(
        0.95, "Confidence of the interval of the mean F1 difference: better/worse only when it excludes 0."
    )
    judge: bool = setting(
        False,
        "Also grade every answer with an LLM through a provider (correct / partly / wrong, with a "
        "reason); needs the provider settings.",
    )
    memory: str = setting(
        "auto",
        "Also answer every set with the project's memory in the prompt (base+memory, tuned+memory "
        "columns), built as `ftf chat` builds it: auto = when the memory has items, on = always "
        "(an empty memory is an error), off = never.",
    )
    memories: int = setting(5, "Memories recalled per question for the memory columns.")
    # On by default: an eval or held-out question was written from one chunk, and a memory synced
    # from the same documents recalls that chunk (for a Q&A row, the question and its answer
    # verbatim), so the memory columns alone measure open-book lookup. Only the questions whose
    # recall held their own source are asked again, so it costs little when there is no leak.
    memory_exclude_source: bool = setting(
        True,
        "Also score the memory columns with each question's own source left out of its recall (the "
        "memory item of the chunk the question was written from; the next best items take its "
        "place): the report shows both, and flags the questions whose own source was in the prompt.",
    )
    memory_share: float = setting(
        0.5, "Share of the prompt's free room memories may fill (as chat's memory_share)."
    )
    batch_size: int = setting(4, "Packed rows per forward pass when computing losses.")
    threads: int = setting(
        0,
        "CPU threads for torch (0 = the cores other processes leave free, re-checked as the load "
        "changes; N = exactly N).",
    )

    def problems(self) -> list[str]:
        """Every invalid value, each naming its key and the fix."""
        out = [f"{n}: must be >= 0" for n in ("answers", "recall", "seed", "threads") if getattr(self, n) < 0]
        out += [
            f"{n}: must be >= 1"
            for n in ("max_new_tokens", "gen_batch", "resamples", "batch_size")
            if getattr(self, n) < 1
        ]
        if self.memory not in MEMORY_MODES:
            out.append(f"memory: must be one of {', '.join(MEMORY_MODES)}, not {self.memory!r}")
        if self.memories < 1:
            out.append("memories: must be >= 1 (turn the memory columns off with memory: off)")
        if not 0 <= self.memory_share <= 1:
            out.append("memory_share: must be in [0, 1]")
        if not 0.5 <= self.confidence < 1:
            out.append("confidence: must be in [0.5, 1), e.g. 0.95")
        return out
