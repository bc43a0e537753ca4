"""The knowledge goal's curve: recall-probe F1, held-out F1 and general-text perplexity against
training steps (``bench/knowledge.py --curve``).

One knowledge run with its stopping rules off (recall patience 0, no forgetting guard) so the curve
runs to ``--max-steps``; a checkpoint at every probe step, all kept. The probe's F1 comes from the
run's own ``metrics.jsonl`` (its 16-question sample of training questions); afterwards every
checkpoint's weights are loaded into the tuned model and answer the 45 held-out bench questions
(greedy, token F1) and measure the perplexity of ``evaluate/data/general_text.md`` (the forgetting
check's text, never trained on). Writes ``curve.csv`` and ``curve.png`` under ``--out``
(default ``bench/results/``) and prints the table.
"""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("step", "recall_f1", "heldout_f1", "heldout_em", "general_ppl", "general_change")


def curve_config(cfg: Any, max_steps: int, every: int) -> Any:
    """``cfg`` (a knowledge-goal TrainConfig) with nothing that stops it early, and a kept checkpoint
    at every probe."""
    recall = replace(cfg.recall, every=every, patience=0, max_forgetting=0.0)
    checkpoints = replace(cfg.checkpoints, every=every, keep_last=max_steps // every + 2)
    return replace(cfg, max_steps=max_steps, recall=recall, checkpoints=checkpoints)


def measure_checkpoints(
    run_dir: Path, questions: list[str], refs: list[str], ask: Any, score: Any
) -> list[dict[str, Any]]:
    """Held-out F1/EM and general-text perplexity of every checkpoint (step 0: the base)."""
    from finetuneflow import hardware
    from finetuneflow.evaluate.forgetting import text_perplexity
    from finetuneflow.models.load import load_tuned
    from finetuneflow.state.checkpoints import checkpoint_dirs, load_weights

    tuned = load_tuned(run_dir)
    amp = partial(hardware.autocast, "cpu", hardware.autocast_dtype("cpu", "auto"))
    rows: list[dict[str, Any]] = []
    # the step-0 probe saves the base as a checkpoint (adapter B = 0), so it is measured below
    for folder in checkpoint_dirs(run_dir):
        start = time.time()
        load_weights(folder, tuned.model)
        with amp():
            scores = score(ask(tuned.model, tuned.tokenizer, questions), refs)
        general = text_perplexity(tuned, 512, 4, amp)
        step = int(folder.name.rsplit("-", 1)[1])
        ppl, change = general["tuned_perplexity"], general["change"]
        rows.append({"step": step, "heldout_f1": scores["f1"], "heldout_em": scores["em"],
                     "general_ppl": ppl, "general_change": change})  # fmt: skip
        print(f"  step {step}: held-out F1 {scores['f1']:.3f}, general ppl "
              f"{general['tuned_perplexity']:.2f} ({general['change']:+.1%}), {time.time() - start:.0f} s",
              flush=True)  # fmt: skip
    return rows


def with_recall(rows: list[dict[str, Any]], probe: list[tuple[int, float, Any]]) -> list[dict[str, Any]]:
    """The rows with the probe's F1 of the same step (None where the probe did not run)."""
    by_step = {step: f1 for step, f1, _ in probe}
    return [{**r, "recall_f1": by_step.get(r["step"])} for r in rows]


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else round(r[k], 4)) for k in FIELDS})
    return path


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """F1 (left axis) and general-text perplexity change (right axis) against steps; the 0.6 recall
    target and the +10% forgetting limit as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    recall = [(r["step"], r["recall_f1"]) for r in rows if r["recall_f1"] is not None]
    ax.plot([s for s, _ in recall], [f for _, f in recall], "o-", color="#4C72B0", label="recall probe F1")
    ax.plot(steps, [r["heldout_f1"] for r in rows], "s-", color="#55A868", label="held-out F1 (45)")
    ax.axhline(0.6, color="#4C72B0", linestyle="--", linewidth=1, label="recall target 0.6")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("token F1")
    ax.set_ylim(0, 1.05)
    right = ax.twinx()
    right.plot(steps, [100 * r["general_change"] for r in rows], "^:", color="#C44E52",
               label="general-text perplexity change (%)")  # fmt: skip
    right.axhline(10, color="#C44E52", linestyle="--", linewidth=1, label="forgetting limit +10%")
    right.set_ylabel("general-text perplexity change (%)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| step | recall probe F1 | held-out F1 / EM | general ppl (change) |")
    print("|---|---|---|---|")
    for r in rows:
        recall = "" if r["recall_f1"] is None else f"{r['recall_f1']:.2f}"
        print(f"| {r['step']} | {recall} | {r['heldout_f1']:.2f} / {r['heldout_em']:.2f} | "
              f"{r['general_ppl']:.2f} ({r['general_change']:+.1%}) |")  # fmt: skip
