"""The run report: what was trained on what, how it went, and whether it helped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetuneflow.evaluate.evaluate import RESULT
from finetuneflow.train import run_files as rf


def plot_losses(metrics: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step and eval loss at its checkpoints, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4C72B0", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss", color="#DD8452")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _loss_table(losses: dict[str, Any]) -> list[str]:
    lines = [
        "| held-out set | examples | base loss | tuned loss | base ppl | tuned ppl | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, v in losses.items():
        lines.append(
            f"| {kind} | {v['examples']} | {v['base_loss']:.3f} | {v['tuned_loss']:.3f} | "
            f"{v['base_perplexity']:.1f} | {v['tuned_perplexity']:.1f} | {-100 * v['improvement']:+.1f}% |"
        )
    return lines


def _verdict(losses: dict[str, Any]) -> str:
    chat = losses.get("chat") or next(iter(losses.values()), None)
    if not chat:
        return "No held-out examples: nothing to compare."
    if chat["tuned_loss"] < chat["base_loss"]:
        return (
            f"The tuned model's eval loss on held-out questions is **lower** than the base model's "
            f"({chat['tuned_loss']:.3f} vs {chat['base_loss']:.3f}, {100 * chat['improvement']:.1f}% lower)."
        )
    return (
        f"The tuned model's eval loss is **not lower** than the base model's ({chat['tuned_loss']:.3f} vs "
        f"{chat['base_loss']:.3f}): more data, more epochs or a higher learning rate may help."
    )


def _answers(answers: list[dict[str, str]]) -> list[str]:
    lines: list[str] = []
    for i, a in enumerate(answers, 1):
        lines += [
            f"**Q{i}. {a['question']}**",
            "",
            f"- reference: {a['reference']}",
            f"- base: {a['base']}",
            f"- tuned: {a['tuned']}",
            "",
        ]
    return lines


def write_report(run_dir: Path, out_dir: Path, exports: dict[str, Any]) -> dict[str, Any]:
    """Write report.md, loss.png, metrics.json and config.json into ``out_dir``."""
    metrics = rf.read_metrics(run_dir)
    config = rf.read_json(run_dir / rf.CONFIG)
    summary = rf.read_json(run_dir / rf.SUMMARY)
    manifest = rf.read_json(run_dir / rf.MANIFEST)
    evaluation = json.loads((run_dir / RESULT).read_text()) if (run_dir / RESULT).exists() else None
    plot_losses(metrics, out_dir / "loss.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"Base model: `{config['train']['base_model']}`  ",
        f"Dataset: `{config['dataset']}`  ",
        f"Device: {config['device']}, autocast {config['autocast']}, {config['threads']} threads",
        "",
        "## Result",
        "",
    ]
    if evaluation:
        lines += [_verdict(evaluation["losses"]), "", *_loss_table(evaluation["losses"]), ""]
    else:
        lines += ["Not evaluated yet: run `ftf evaluate` and export again.", ""]
    lines += [
        "## Training",
        "",
        "![loss curve](loss.png)",
        "",
        f"{summary['steps']} steps in {summary['train_seconds']} s, {summary['tokens_per_s']} real tokens/s; "
        f"final train loss {summary['final_loss']:.3f}.",
        "",
        "| data | examples | tokens | supervised | truncated | rows |",
        "|---|---|---|---|---|---|",
    ]
    for split, c in manifest["data"].items():
        lines.append(
            f"| {split} | {c['examples']} | {c['tokens']} | {c['supervised_tokens']} | "
            f"{c['truncated']} | {c['rows']} |"
        )
    if evaluation and evaluation["answers"]:
        lines += [
            "",
            "## Answers side by side (greedy, held-out questions)",
            "",
            *_answers(evaluation["answers"]),
        ]
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config["train"], indent=2),
        "```",
        "",
        "## Exports",
        "",
    ]
    for name, result in exports.items():
        lines.append(
            f"- **{name}**: `{result.get('path', '')}`"
            + (
                f" (merged vs adapter max logit diff {result['max_logit_diff_vs_adapter']:.2e})"
                if "max_logit_diff_vs_adapter" in result
                else ""
            )
        )
    lines += ["", "Library versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()), ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return {"path": str(out_dir / "report.md"), "plot": str(out_dir / "loss.png")}
