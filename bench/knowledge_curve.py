"""The knowledge goal's curve: recall-probe F1, held-out F1 and general-text perplexity against
training steps (``bench/knowledge.py --curve``).

One knowledge run with its stopping rules off (recall patience 0, no forgetting guard) so the curve
runs to ``--max-steps``; a checkpoint at every probe step, all kept. The probe's F1 comes from the
run's own ``metrics.jsonl`` (its 16-question sample of training questions); afterwards every
checkpoint's weights are loaded into the tuned model and answer the 45 held-out bench questions
(greedy, token F1) and measure the perplexity of ``evaluate/data/general_text.md`` (the forgetting
check's text, never trained on). Writes ``knowledge_curve.csv`` / ``.png`` (another base model:
``knowledge_curve_<model>.*``) under ``--out`` (default ``bench/results/``), a ``.json`` beside them
saying how it was made (model, parameter count, learning rate, rank, seconds), and prints the table.

Size (``--size-plot``): every curve's checkpoints read back, three per model (the best recall F1
inside the +10% forgetting limit, the first with recall F1 >= 0.6, the best held-out F1), drawn
against the model's parameter count (``knowledge_size.png``).
"""

from __future__ import annotations

import csv
import json
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


def curve_name(model: str, default: str) -> str:
    """File stem of a model's curve: the default model keeps the first curve's name."""
    return "knowledge_curve" if model == default else f"knowledge_curve_{model.replace('/', '_')}"


def count_params(model_dir: Path) -> tuple[int, int]:
    """(all, token-embedding) parameters stored in a model folder's safetensors files (tied weights
    stored once). The two models here differ mostly in vocabulary: Gemma 3's 262k-token embedding
    is 168M of its 268M, SmolLM2's 49k-token one 28M of its 135M."""
    from math import prod

    from safetensors import safe_open

    total = embed = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                n = prod(fh.get_slice(key).get_shape())
                total += n
                embed += n if "embed_tokens" in key else 0
    return total, embed


def write_meta(path: Path, meta: dict[str, Any]) -> Path:
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def read_curve(csv_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A curve CSV's rows (numbers; None where empty) and its ``.json`` beside it.

    Raises:
        FileNotFoundError: no ``.json`` (the parameter count is in it): rerun ``--curve``.
    """
    meta_path = csv_path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: rerun --curve for that model to write it")
    with csv_path.open(encoding="utf-8") as fh:
        rows = [{k: (float(v) if v != "" else None) for k, v in r.items()} for r in csv.DictReader(fh)]
    return json.loads(meta_path.read_text(encoding="utf-8")), rows


def picks(rows: list[dict[str, Any]], limit: float = 0.10, target: float = 0.6) -> dict[str, dict[str, Any]]:
    """The checkpoints the size plot compares (the step-0 base excluded): ``inside`` the best recall
    F1 with perplexity up at most ``limit`` (ties: the better held-out F1), ``first`` the first with
    recall F1 >= ``target``, ``best`` the best held-out F1. A pick with no checkpoint is left out."""
    trained = [r for r in rows if r["step"] > 0 and r["recall_f1"] is not None]
    inside = [r for r in trained if r["general_change"] <= limit]
    out: dict[str, dict[str, Any]] = {}
    if inside:
        out["inside"] = max(inside, key=lambda r: (r["recall_f1"], r["heldout_f1"]))
    if reached := [r for r in trained if r["recall_f1"] >= target]:
        out["first"] = reached[0]
    if trained:
        out["best"] = max(trained, key=lambda r: r["heldout_f1"])
    return out


PICKS = {"inside": "best inside +10% ppl", "first": "first recall >= 0.6", "best": "best held-out"}


def size_table(curves: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per (model, pick): parameters, step, recall/held-out F1, held-out over base, ppl change."""
    table = []
    for meta, rows in sorted(curves, key=lambda c: c[0]["params"]):
        base = next(r for r in rows if r["step"] == 0)
        for pick, r in picks(rows).items():
            table.append({"model": meta["model"], "params": meta["params"], "body": meta["params"] - meta.get(
                              "embedding_params", 0), "pick": pick,
                          "step": int(r["step"]), "recall_f1": r["recall_f1"], "heldout_f1": r["heldout_f1"],
                          "heldout_gain": r["heldout_f1"] - base["heldout_f1"],
                          "base_heldout": base["heldout_f1"],
                          "general_change": r["general_change"]})  # fmt: skip
    return table


Curve = tuple[dict[str, Any], list[dict[str, Any]]]  # (its .json, its rows)


def plot_size(table: list[dict[str, Any]], curves: list[Curve], path: Path, title: str) -> Path:
    """Left: recall and held-out F1 of the picked checkpoints against parameters (targets dashed);
    middle: their general-text perplexity change (the +10% limit dashed); right: every checkpoint's
    F1 against its perplexity change, one colour per model, the target region shaded. Points are
    labelled with their step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, trade) = plt.subplots(1, 3, figsize=(16, 6), dpi=100)
    _plot_tradeoff(trade, curves)
    styles = {"inside": ("o", "-"), "first": ("^", ":"), "best": ("s", "--")}
    for pick, label in PICKS.items():
        rows = [r for r in table if r["pick"] == pick]
        if not rows:
            continue
        xs = [r["params"] / 1e6 for r in rows]
        marker, line = styles[pick]
        left.plot(xs, [r["recall_f1"] for r in rows], marker + line, color="#4C72B0",
                  label=f"recall F1, {label}")  # fmt: skip
        left.plot(xs, [r["heldout_f1"] for r in rows], marker + line, color="#55A868",
                  label=f"held-out F1, {label}")  # fmt: skip
        right.plot(xs, [100 * r["general_change"] for r in rows], marker + line, color="#C44E52",
                   label=f"ppl change, {label}")  # fmt: skip
        for r, x in zip(rows, xs, strict=True):
            right.annotate(f"step {r['step']}", (x, 100 * r["general_change"]), fontsize=7,
                           textcoords="offset points", xytext=(4, 4))  # fmt: skip
            left.annotate(f"{r['step']}", (x, r["recall_f1"]), fontsize=7, textcoords="offset points",
                          xytext=(4, -10))  # fmt: skip
    left.axhline(0.6, color="#4C72B0", linestyle="--", linewidth=1, label="recall target 0.6")
    targets = sorted({(r["params"] / 1e6, r["base_heldout"] + 0.15) for r in table})
    left.plot([x for x, _ in targets], [t for _, t in targets], "_", color="#55A868", markersize=28,
              markeredgewidth=2, label="held-out target (base + 0.15)")  # fmt: skip
    right.axhline(10, color="#C44E52", linestyle="--", linewidth=1, label="forgetting limit +10%")
    models = sorted({(r["params"], r["body"], r["model"]) for r in table})
    ticks = [f"{m}\n{p / 1e6:.0f}M ({b / 1e6:.0f}M without embeddings)" for p, b, m in models]
    right.set_yscale("symlog", linthresh=20)  # +10% and +1000% both readable
    for ax in (left, right):
        ax.set_xlabel("parameters (millions)")
        ax.set_xticks([p / 1e6 for p, _, _ in models], ticks, fontsize=7)
        ax.margins(x=0.25)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    left.set_ylabel("token F1 (step labelled)")
    left.set_ylim(0, 1.05)
    right.set_ylabel("general-text perplexity change (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_tradeoff(ax: Any, curves: list[Curve]) -> None:
    """Recall (solid) and held-out (dashed) F1 against general-text perplexity change, per model."""
    colours = ["#4C72B0", "#DD8452", "#8172B3", "#937860"]
    for (meta, rows), colour in zip(sorted(curves, key=lambda c: c[0]["params"]), colours, strict=False):
        xs = [100 * r["general_change"] for r in rows]
        ax.plot(xs, [r["recall_f1"] for r in rows], "o-", color=colour,
                label=f"{meta['model']} ({meta['params'] / 1e6:.0f}M): recall")  # fmt: skip
        ax.plot(xs, [r["heldout_f1"] for r in rows], "s--", color=colour, alpha=0.7, label="held-out")
        for r, x in zip(rows, xs, strict=True):
            ax.annotate(f"{int(r['step'])}", (x, r["recall_f1"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))  # fmt: skip
    ax.axvline(10, color="#C44E52", linestyle="--", linewidth=1)
    ax.axhline(0.6, color="#4C72B0", linestyle="--", linewidth=1)
    low, high = min(-10, ax.get_xlim()[0]), ax.get_xlim()[1]
    ax.axvspan(
        low, 10, ymin=0.6 / 1.05, ymax=1, color="#55A868", alpha=0.12, label="target: recall, forgetting"
    )
    ax.set_xlim(low, high)
    ax.set_xscale("symlog", linthresh=20)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("general-text perplexity change (%)")
    ax.set_ylabel("token F1 (step labelled)")
    ax.set_title("every checkpoint: F1 against forgetting", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)


def print_size_table(table: list[dict[str, Any]]) -> None:
    print("\n| model (params) | checkpoint | step | recall F1 | held-out F1 (over base) | general ppl |")
    print("|---|---|---|---|---|---|")
    for model, params in sorted({(r["model"], r["params"]) for r in table}, key=lambda m: m[1]):
        name = f"{model} ({params / 1e6:.0f}M)"
        for pick, label in PICKS.items():
            r = next((r for r in table if r["model"] == model and r["pick"] == pick), None)
            if r is None:  # e.g. no trained checkpoint stayed inside the forgetting limit
                print(f"| {name} | {label} | none | | | |")
                continue
            heldout = f"{r['heldout_f1']:.2f} ({r['heldout_gain']:+.2f})"
            cells = [str(r["step"]), f"{r['recall_f1']:.2f}", heldout, f"{r['general_change']:+.1%}"]
            print(f"| {name} | {label} | {' | '.join(cells)} |")
