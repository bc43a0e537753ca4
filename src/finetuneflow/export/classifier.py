"""Exports of a classification run: its adapter (LoRA + the trained head, with the labels) and its
report (accuracy against the majority baseline, macro-F1, per-class scores, confusion matrix).

The adapter is proven before it is reported: it is reloaded from the export folder with
transformers and PEFT alone, as a user would, and must give the labels and probabilities the run's
own model (:mod:`finetuneflow.models.classifier`) gives on the run's eval texts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetuneflow.errors import VerificationError
from finetuneflow.export.report import plot_losses
from finetuneflow.export.step import Context, folder_result
from finetuneflow.state import runs as rf

VERIFY_TEXTS = 32  # eval texts each side scores; enough to catch a missing head or shuffled labels
PROB_TOLERANCE = 1e-4  # fp32 on both sides: only the summation order differs


def export_adapter(ctx: Context) -> dict[str, Any]:
    """``adapter/``: PEFT's adapter (LoRA matrices and the head, safetensors), the tokenizer and
    ``labels.json``; verified by reloading it without our code."""
    target = ctx.out_dir / "adapter"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ctx.run_dir / rf.ADAPTER, target)
    shutil.copyfile(ctx.run_dir / rf.LABELS, target / rf.LABELS)
    verify = _verify(ctx.run_dir, target) if ctx.cfg.verify else None
    return folder_result(target, **({"verify": verify} if verify else {}))


def _verify(run_dir: Path, adapter_dir: Path) -> dict[str, Any]:
    """Eval texts through the run's model and through the export reloaded by PEFT; raises
    VerificationError when a label differs or a probability moves by more than the tolerance."""
    from functools import partial

    from finetuneflow import hardware
    from finetuneflow.models.classifier import encode, load_run, scores

    predictions = _predictions(run_dir)
    texts = [p["text"] for p in predictions if "text" in p][:VERIFY_TEXTS]
    if not texts:
        return {"passed": True, "examples": 0, "note": "no eval texts recorded (a run of an older version)"}
    run = load_run(run_dir, "cpu")
    ids, _ = encode(run.tokenizer, texts, run.settings["max_len"])
    fp32 = partial(hardware.autocast, "cpu", None)
    expected = scores(run.model, ids, run.pad_id, "cpu", fp32, run.settings["batch_size"])
    got = _reload_probabilities(adapter_dir, run.base_dir, texts, run.settings["max_len"])
    agree = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    diff = float((got - expected).abs().max())
    result = {"passed": agree == 1.0 and diff <= PROB_TOLERANCE, "examples": len(texts),
              "max_abs_diff": diff, "top1_agreement": agree}  # fmt: skip
    if not result["passed"]:
        raise VerificationError(
            f"the exported adapter reloaded with PEFT does not reproduce the run: {agree:.3f} of "
            f"{len(texts)} labels agree, probabilities differ by up to {diff:.2e} (> {PROB_TOLERANCE})"
        )
    return result


def _reload_probabilities(adapter_dir: Path, base_dir: Path, texts: list[str], max_len: int) -> Any:
    """Class probabilities [texts, classes] from the export with transformers and PEFT only, one text
    at a time (no padding to get right): what a user of the folder would run."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetuneflow.models.classifier import quiet  # log levels only: the loading is PEFT's own

    labels = json.loads((adapter_dir / rf.LABELS).read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    with quiet():
        base = AutoModelForSequenceClassification.from_pretrained(
            str(base_dir), num_labels=len(labels["labels"]), id2label=dict(enumerate(labels["labels"])),
            label2id=labels["label2id"], pad_token_id=tokenizer.pad_token_id, dtype=torch.float32,
        )  # fmt: skip
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_len, return_tensors="pt")
            out.append(torch.softmax(model(**ids).logits.float(), dim=-1)[0])
    return torch.stack(out)


def _predictions(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / rf.PREDICTIONS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export_report(ctx: Context) -> dict[str, Any]:
    """report.md, loss.png, metrics.json and config.json of a classification run."""
    run_dir, out_dir = ctx.run_dir, ctx.out_dir
    summary = rf.read_json(run_dir / rf.SUMMARY)
    config = rf.read_json(run_dir / rf.CONFIG)
    manifest = rf.read_json(run_dir / rf.MANIFEST)
    metrics = rf.read_metrics(run_dir)
    plot_losses(metrics, out_dir / "loss.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    lines = [
        f"# Classification report: {run_dir.name}",
        "",
        f"Base model: `{config[rf.CLASSIFY]['base_model']}`; labelled file `{config['train_csv']}`, "
        f"eval: {manifest['split']}  ",
        f"Device: {config['device']}, autocast {config['autocast']}, {config['threads']} threads",
        "",
        *result_lines(summary),
        *_errors(_predictions(run_dir)),
        *_training(summary, manifest),
        "## Configuration",
        "",
        "```json",
        json.dumps(config[rf.CLASSIFY], indent=2),
        "```",
        "",
        *_exports(ctx.results, out_dir),
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()),
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))
    return {"path": str(out_dir / "report.md"), "plot": str(out_dir / "loss.png")}


def result_lines(summary: dict[str, Any]) -> list[str]:
    """The verdict against the majority baseline, then per-class scores and the confusion matrix."""
    result, base, names = summary["eval"], summary["majority_baseline"], summary["labels"]
    gain = 100 * (result["accuracy"] - base["accuracy"])
    verdict = "**beats**" if gain > 0 else "**does not beat**"
    lines = [
        "## Result",
        "",
        f"Accuracy **{result['accuracy']:.3f}** on {result['examples']} eval examples {verdict} the majority "
        f"baseline {base['accuracy']:.3f} (always answering {base['label']!r}, the training set's most "
        f"common class) by {gain:+.1f} points; macro-F1 **{result['macro_f1']:.3f}**.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, m in result["per_class"].items():
        scored = " | ".join(f"{m[k]:.3f}" for k in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {scored} | {m['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, result["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(n) for n in row) + " |")
    return [*lines, ""]


def _errors(predictions: list[dict[str, Any]], shown: int = 10) -> list[str]:
    """The most confident mistakes: where a label may be wrong, or the classes overlap."""
    wrong = sorted((p for p in predictions if p["predicted"] != p["label"]), key=lambda p: -p["prob"])
    if not wrong:
        return []
    lines = ["## Most confident mistakes", "", "| row | text | true | predicted | prob |", "|---" * 5 + "|"]
    for p in wrong[:shown]:
        text = " ".join(str(p.get("text", "")).split())[:80].replace("|", "\\|")
        lines.append(f"| {p['row']} | {text} | {p['label']} | {p['predicted']} | {p['prob']:.3f} |")
    return [*lines, ""]


def _training(summary: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    lines = [
        "## Training",
        "",
        "![loss curve](loss.png)",
        "",
        f"{summary['steps']} steps in {summary['train_seconds']} s; final train loss "
        f"{summary['final_loss']:.3f}, eval loss {summary['eval']['loss']:.3f}.",
        "",
        "| side | examples | truncated | per class |",
        "|---|---|---|---|",
    ]
    for side, d in manifest["data"].items():
        per_class = ", ".join(f"{k} {v}" for k, v in d["per_class"].items())
        lines.append(f"| {side} | {d['examples']} | {d['truncated']} | {per_class} |")
    return [*lines, ""]


def _exports(exports: dict[str, Any], out_dir: Path) -> list[str]:
    lines = ["## Exports", "", "| format | folder | MB | verification |", "|---|---|---|---|"]
    for name, item in exports.items():
        v = item.get("verify") or {}
        check = "-"
        if "top1_agreement" in v:
            check = f"PEFT reload: {v['top1_agreement']:.3f} labels agree, probs ±{v['max_abs_diff']:.1e}"
        path = Path(item.get("path", ""))
        shown = path.relative_to(out_dir) if path.is_relative_to(out_dir) else path
        lines.append(f"| {name} | `{shown}` | {item.get('bytes', 0) / 1e6:.1f} | {check} |")
    return [*lines, "", *USAGE, ""]


USAGE = [
    "Using `adapter/` (transformers + PEFT, nothing of ours):",
    "",
    "```python",
    "labels = json.load(open('adapter/labels.json'))",
    "tok = AutoTokenizer.from_pretrained('adapter')",
    "names = labels['labels']",
    "base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=len(names),",
    "    id2label=dict(enumerate(names)), label2id=labels['label2id'], pad_token_id=tok.pad_token_id)",
    "model = PeftModel.from_pretrained(base, 'adapter').eval()",
    "label = names[model(**tok(text, return_tensors='pt')).logits.argmax(-1).item()]",
    "```",
]
