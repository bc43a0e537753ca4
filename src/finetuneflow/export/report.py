"""The run report: what was trained on what, how it went, and whether it helped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetuneflow.export.report_answers import answer_tables, lead
from finetuneflow.state import runs as rf


def plot_losses(metrics: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step and eval loss at its checkpoints, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4C72B0", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss", color="#DD8452")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no "2.5" ticks
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _loss_table(losses: dict[str, Any]) -> list[str]:
    lines = [
        "| eval split | examples | base loss | tuned loss | base ppl | tuned ppl | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, v in losses.items():
        lines.append(
            f"| {kind} | {v['examples']} | {v['base_loss']:.3f} | {v['tuned_loss']:.3f} | "
            f"{v['base_perplexity']:.1f} | {v['tuned_perplexity']:.1f} | {-100 * v['improvement']:+.1f}% |"
        )
    return lines


def _loss_sentence(losses: dict[str, Any]) -> str:
    chat = losses.get("chat") or next(iter(losses.values()), None)
    if not chat:
        return "No eval-split examples: nothing to compare."
    if chat["tuned_loss"] < chat["base_loss"]:
        return (
            f"Loss: the tuned model's eval loss on the eval split is **lower** than the base model's "
            f"({chat['tuned_loss']:.3f} vs {chat['base_loss']:.3f}, {100 * chat['improvement']:.1f}% lower)."
        )
    return (
        f"Loss: the tuned model's eval loss is **not lower** than the base model's "
        f"({chat['tuned_loss']:.3f} vs {chat['base_loss']:.3f}): more data, more epochs or a higher "
        "learning rate may help."
    )


def write_report(run_dir: Path, out_dir: Path, exports: dict[str, Any]) -> dict[str, Any]:
    """Write report.md, loss.png, metrics.json and config.json (and the dataset's token-length
    histogram) into ``out_dir``."""
    metrics = rf.read_metrics(run_dir)
    config = rf.read_json(run_dir / rf.CONFIG)
    summary = rf.read_json(run_dir / rf.SUMMARY)
    manifest = rf.read_json(run_dir / rf.MANIFEST)
    evaluated = run_dir / rf.EVALUATION
    evaluation = json.loads(evaluated.read_text()) if evaluated.exists() else None
    plot_losses(metrics, out_dir / "loss.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    lines = _header(run_dir, config, summary)
    if evaluation:  # answers first: a lower loss alone says little about right answers
        losses = evaluation["losses"]
        lines += [*lead(evaluation), _loss_sentence(losses), "", *_loss_table(losses), ""]
        if evaluation.get("sets"):
            lines += ["## Answers per question (greedy)", "", *answer_tables(evaluation)]
    else:
        lines += ["Not evaluated yet: run `ftf evaluate` and export again.", ""]
    lines += _training(summary, manifest)
    lines += _dataset(Path(config["dataset"]), out_dir)
    lines += ["", "## Configuration", "", "```json", json.dumps(config["train"], indent=2), "```", ""]
    lines += _exports(exports, out_dir)
    lines += ["", "Library versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()), ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return {"path": str(out_dir / "report.md"), "plot": str(out_dir / "loss.png")}


def _header(run_dir: Path, config: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    notes = [f"> {n}" for n in config.get("notes", [])]
    return [
        f"# Run report: {run_dir.name}",
        "",
        f"Base model: `{config['train']['base_model']}`, method {config.get('method', 'lora')} "
        f"({config.get('trainable_params', '?')} of {config.get('total_params', '?')} parameters trained)  ",
        f"Dataset: `{config['dataset']}`  ",
        f"Device: {config['device']}, autocast {config['autocast']}, {config['threads']} threads, "
        f"{config.get('world_size', 1)} process(es); run {summary.get('status', 'finished')}",
        "",
        *notes,
        *([""] if notes else []),
        "## Result",
        "",
    ]


def _training(summary: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    lines = [
        "## Training",
        "",
        "![loss curve](loss.png)",
        "",
        f"{summary['steps']} steps in {summary['train_seconds']} s, {summary['tokens_per_s']} real tokens/s; "
        f"final train loss {summary['final_loss']:.3f}.",
    ]
    if summary.get("status") == "early_stopped":
        lines.append(f"Stopped early; the adapter is the best eval step ({summary['best_step']}).")
    for backoff in summary.get("oom_backoffs", []):
        lines.append(f"Out of memory at step {backoff['step']}: went on with {backoff['micro_size']} row(s).")
    lines += ["", "| data | examples | tokens | supervised | truncated | rows |", "|---|---|---|---|---|---|"]
    for split, c in manifest["data"].items():
        lines.append(
            f"| {split} | {c['examples']} | {c['tokens']} | {c['supervised_tokens']} | "
            f"{c['truncated']} | {c['rows']} |"
        )
    return lines


def _dataset(dataset_dir: Path, out_dir: Path) -> list[str]:
    """The dataset's funnel and token lengths (from the build's stats.json), when it has them."""
    stats_file = dataset_dir / "stats.json"
    if not stats_file.exists():
        return []
    stats = json.loads(stats_file.read_text())
    lines = ["", "## Dataset", "", "| stage | in | kept | rejected |", "|---|---|---|---|"]
    lines += [f"| {st} | {c['in']} | {c['kept']} | {c['rejected']} |" for st, c in stats["stages"].items()]
    reasons = sorted(
        ((n, st, why) for st, rs in stats["rejections"].items() for why, n in rs.items()), key=lambda t: -t[0]
    )
    if reasons:
        lines += [
            "",
            "Most frequent rejections: " + "; ".join(f"{why} ({st}): {n}" for n, st, why in reasons[:5]),
        ]
    lines += ["", "| split | examples | p50 tokens | p90 | max |", "|---|---|---|---|---|"]
    for split, t in stats["tokens"].items():
        if t:
            lines.append(f"| {split} | {t['count']} | {t['p50']} | {t['p90']} | {t['max']} |")
    histogram = dataset_dir / "token_lengths.png"
    if histogram.exists():
        shutil.copyfile(histogram, out_dir / "token_lengths.png")
        lines += ["", "![token lengths](token_lengths.png)"]
    return lines


def _exports(exports: dict[str, Any], out_dir: Path) -> list[str]:
    """Every artefact with its checksum and verification numbers, then how to use each."""
    lines = ["## Exports", "", "| format | file | MB | sha256 | verification |", "|---|---|---|---|---|"]
    for name, result in exports.items():
        for label, item in _artefacts(name, result):
            lines.append(
                f"| {label} | `{_rel(item.get('path', ''), out_dir)}` | {item.get('bytes', 0) / 1e6:.1f} | "
                f"{str(item.get('sha256', ''))[:12]} | {_verified(item)} |"
            )
    modelfile = out_dir / "ollama" / "Modelfile"
    if modelfile.exists():
        lines += ["", "### Ollama Modelfile", "", "```", modelfile.read_text().rstrip(), "```"]
    lines += ["", "### Using the exports", "", *USAGE]
    return lines


def _artefacts(name: str, result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, item) rows of one exporter's result: one per file when it lists them by type under
    ``files`` (the GGUF types), else one for the whole result (``files`` then maps names to sha256)."""
    files = result.get("files")
    if isinstance(files, dict) and files and all(isinstance(v, dict) for v in files.values()):
        return [(f"{name} {t}", item) for t, item in files.items()]
    return [(name, result)]


def _verified(item: dict[str, Any]) -> str:
    v = item.get("verify")
    if not v:
        diff = item.get("max_logit_diff_vs_adapter")
        return f"logits vs adapter ±{diff:.1e}" if diff is not None else "-"
    if isinstance(v, dict) and "passed" in v:
        mark = "passed" if v["passed"] else "FAILED"
        return f"{mark}: max diff {v['max_abs_diff']:.2g}, top-1 {v['top1_agreement']:.3f}, {v['stops']}"
    return str(v)


def _rel(path: str, out_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(out_dir))
    except ValueError:
        return path


USAGE = [
    "- `adapter/`: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), 'adapter')`",
    "- `merged/`: `AutoModelForCausalLM.from_pretrained('merged')`, tokenizer and chat template included",
    "- `gguf/model-*.gguf`: `llama-cli -m gguf/model-q8_0.gguf -cnv` (llama.cpp) or the Modelfile below",
    "- `gguf/adapter-*.gguf`: `llama-cli -m BASE.gguf --lora gguf/adapter-f16.gguf -cnv`",
    "- `ollama/Modelfile`: `cd ollama && ollama create mymodel -f Modelfile && ollama run mymodel`",
    "- `onnx/model.onnx`: `onnxruntime.InferenceSession('onnx/model.onnx')`, feeds input_ids+attention_mask",
]
