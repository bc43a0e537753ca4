"""Prove an exported artefact behaves like the trained model before calling the export done.

Every exporter reloads what it wrote with a reader that is not the writer (transformers' GGUF
loader, llama.cpp, onnxruntime, PEFT) and hands this module a ``LogitsFn``: token ids in, next-token
logits for every position out. The same fixed chat prompts go through the trained model and the
artefact, and we compare

- logits: max |difference| and top-1 agreement over every position of every prompt, against a
  per-format threshold (F32 exact up to float summation order, F16 <= 0.1, BF16 <= 0.5, quantized
  types by top-1 agreement, where a near-tie of the trained model's may go either way);
- stopping: the artefact's end-of-turn ids must include the trained tokenizer's, and greedy decoding
  of each prompt must produce the same tokens up to where it stops (quantized: it must also stop
  where the trained model stops, a few tokens either way being allowed, unless the two parted at
  a near-tie of the trained model's: then the artefact's turn is another turn).

A failed check raises :class:`VerificationError` carrying the numbers, so a broken export never
reports success.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finetuneflow.errors import VerificationError

LogitsFn = Callable[[list[int]], np.ndarray]
"""Token ids -> float32 logits of shape (len(ids), vocab)."""

PROMPTS = [
    [{"role": "user", "content": "Summarise what you know in one sentence."}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "What should I check first when it stops working?"}],
]
GREEDY_TOKENS = 24

# (max |logit diff| allowed or None, min top-1 agreement) per artefact type
THRESHOLDS: dict[str, tuple[float | None, float]] = {
    "f32": (1e-3, 0.999),
    "f16": (0.1, 0.98),
    "bf16": (0.5, 0.95),
    "q8_0": (None, 0.9),
    "q5_0": (None, 0.75),
    "q5_1": (None, 0.75),
    "q4_0": (None, 0.65),
    "q4_1": (None, 0.65),
}
QUANTIZED_DEFAULT = (None, 0.6)  # K-quants from llama.cpp and anything else lossy
# Top-1 agreement counts a flip as agreement where the trained model's own logits put the artefact's
# pick within this much of its top-1: a near-tie, which either choice answers up to the format's
# rounding. Exact types: twice their logit limit. Quantized: well under their error. On the demo's
# model q8_0 logits were off by up to 1.25 (median 0.45 per position), and all 11 of 102 positions
# that flipped were near-ties under 0.1 (the chat template's tokens, before any answer).
NEAR_TIE: dict[str, float] = {"q8_0": 0.25, "q5_0": 0.5, "q5_1": 0.5, "q4_0": 0.75, "q4_1": 0.75}
QUANTIZED_NEAR_TIE = 0.75


@dataclass
class Reference:
    """The trained model's answers to the fixed prompts."""

    prompts: list[list[int]]
    logits: list[np.ndarray]  # per prompt: (len, vocab) float32
    greedy: list[list[int]]  # per prompt: generated ids, the stop id included when it stopped
    stop_ids: set[int]
    margins: list[list[float]] = field(default_factory=list)  # top-1 minus top-2 logit at each of them


@dataclass
class Verdict:
    """What :func:`check` measured; ``as_dict()`` goes into export.json and the report."""

    kind: str
    max_abs_diff: float
    top1_agreement: float
    greedy_match: float  # share of prompts whose greedy tokens agree up to the stop
    stops: str  # how the stop behaviour compared, in words
    passed: bool
    problems: list[str] = field(default_factory=list)
    near_ties: int = 0  # positions whose flip was a near-tie of the trained model's (NEAR_TIE)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "max_abs_diff": round(self.max_abs_diff, 6),
            "top1_agreement": round(self.top1_agreement, 4),
            "near_ties": self.near_ties,
            "greedy_match": round(self.greedy_match, 4),
            "stops": self.stops,
            "passed": self.passed,
            "problems": self.problems,
        }


def prompt_ids(tokenizer: Any) -> list[list[int]]:
    """The fixed prompts rendered with the tokenizer's chat template, as ids."""
    out = []
    for messages in PROMPTS:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def torch_logits_fn(model: Any) -> LogitsFn:
    """A LogitsFn over a transformers/PEFT model (no cache, one sequence)."""
    import torch

    def run(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    return run


def reference(model: Any, tokenizer: Any, stop_ids: set[int]) -> Reference:
    """Run the trained model on the fixed prompts."""
    fn = torch_logits_fn(model)
    prompts = prompt_ids(tokenizer)
    margins: list[list[float]] = []
    turns = [greedy(fn, p, stop_ids, margins=margins) for p in prompts]
    return Reference(prompts, [fn(p) for p in prompts], turns, stop_ids, margins)


def greedy(
    fn: LogitsFn,
    ids: Sequence[int],
    stop_ids: set[int],
    limit: int = GREEDY_TOKENS,
    margins: list[list[float]] | None = None,
) -> list[int]:
    """Greedy continuation of ``ids`` until a stop id (included) or ``limit`` tokens; appends the
    top-1 minus top-2 logit of each choice to ``margins`` when given."""
    seq, out, gaps = list(ids), [], []
    for _ in range(limit):
        last = fn(seq)[-1]
        token = int(np.argmax(last))
        gaps.append(float(last[token] - np.partition(last, -2)[-2]))
        out.append(token)
        seq.append(token)
        if token in stop_ids:
            break
    if margins is not None:
        margins.append(gaps)
    return out


def near_tie(kind: str) -> float:
    """How close (in the trained model's logits) two tokens may be for an artefact of ``kind`` to
    rightly pick either: twice the logit limit for exact types, NEAR_TIE for quantized ones."""
    limit = THRESHOLDS.get(kind, QUANTIZED_DEFAULT)[0]
    return 2 * limit if limit is not None else NEAR_TIE.get(kind, QUANTIZED_NEAR_TIE)


def check(ref: Reference, fn: LogitsFn, kind: str, artefact_stop_ids: set[int]) -> Verdict:
    """Compare an artefact's LogitsFn against the reference; ``kind`` picks the thresholds."""
    limit_diff, min_agree = THRESHOLDS.get(kind, QUANTIZED_DEFAULT)
    tie = near_tie(kind)
    max_diff, agree, total, ties = 0.0, 0, 0, 0
    for ids, want in zip(ref.prompts, ref.logits, strict=True):
        got = fn(ids)
        if got.shape != want.shape:
            return Verdict(kind, float("inf"), 0.0, 0.0, "not compared", False,
                           [f"logits shape {got.shape} != trained model's {want.shape}"])  # fmt: skip
        max_diff = max(max_diff, float(np.abs(got - want).max()))
        picks = got.argmax(-1)
        # how far below its own top-1 the trained model put the artefact's pick (0 where they agree)
        behind = want.max(-1) - want[np.arange(len(picks)), picks]
        agree += int((behind <= tie).sum())
        ties += int(((behind <= tie) & (picks != want.argmax(-1))).sum())
        total += len(ids)
    top1 = agree / max(total, 1)
    problems = []
    if limit_diff is not None and max_diff > limit_diff:
        problems.append(f"max |logit diff| {max_diff:.4g} > {limit_diff} allowed for {kind}")
    if top1 < min_agree:
        problems.append(f"top-1 agreement {top1:.3f} < {min_agree} required for {kind}")
    stops, match, stop_problems = _compare_stops(ref, fn, kind, artefact_stop_ids)
    problems += stop_problems
    return Verdict(kind, max_diff, top1, match, stops, not problems, problems, ties)


def _compare_stops(
    ref: Reference, fn: LogitsFn, kind: str, artefact_stop_ids: set[int]
) -> tuple[str, float, list[str]]:
    missing = ref.stop_ids - artefact_stop_ids
    if missing:
        return (
            "end-of-turn ids missing",
            0.0,
            [
                f"the artefact does not stop on {sorted(missing)} (the trained model's end-of-turn); "
                "its chat turns would run on"
            ],
        )
    tolerance = THRESHOLDS.get(kind, QUANTIZED_DEFAULT)[0]
    matched, problems, stopped = 0, [], 0
    for i, (ids, want) in enumerate(zip(ref.prompts, ref.greedy, strict=True)):
        got = greedy(fn, ids, ref.stop_ids, limit=len(want) + 4)
        ref_stops = bool(want) and want[-1] in ref.stop_ids
        stopped += ref_stops
        split = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        if split is None and len(got) >= len(want):
            matched += 1
        elif _near_tie(ref, i, split, near_tie(kind)):
            continue  # the runner-up of the trained model's near tie: another turn, nothing to compare
        elif tolerance is not None:  # exact types: only a near-tie may choose the other token
            problems.append(f"greedy tokens differ from the trained model's: {got[:8]} vs {want[:8]}")
            continue  # the paths part here: nothing to compare after
        if ref_stops and not (got and got[-1] in ref.stop_ids):
            problems.append("the trained model ends its turn on a prompt where the artefact does not")
    share = matched / max(len(ref.prompts), 1)
    words = f"same end-of-turn ids; {stopped}/{len(ref.prompts)} reference turns end within "
    words += f"{GREEDY_TOKENS} tokens"
    return words, share, problems


def _near_tie(ref: Reference, prompt: int, step: int | None, width: float) -> bool:
    """True when the trained model's choice at ``step`` won by at most ``width`` (:func:`near_tie`),
    so an artefact within tolerance may rightly pick the runner-up."""
    if step is None or prompt >= len(ref.margins) or step >= len(ref.margins[prompt]):
        return False
    return ref.margins[prompt][step] <= width


def require(verdict: Verdict, what: str) -> dict[str, Any]:
    """The verdict as a dict, or VerificationError with the numbers."""
    if not verdict.passed:
        raise VerificationError(f"{what} failed verification: " + "; ".join(verdict.problems))
    return verdict.as_dict()
