#!/usr/bin/env bash
# The whole pipeline on the shipped sample data with the default model (what `make demo` runs).
# State goes to $FTF_HOME (default ./.ftf-demo so the demo never touches your ~/.finetuneflow).
set -euo pipefail
cd "$(dirname "$0")/.."
export FTF_HOME="${FTF_HOME:-$PWD/.ftf-demo}"
FTF="${FTF:-.venv/bin/ftf}"
P=quickstart
start=$(date +%s)

echo "== 1/6 ingest";   $FTF ingest examples/quickstart/data --project $P
# PII scrubbing is on by default; the sample's phone number and e-mail are the fictional company's
# public support lines, which the tuned model should learn to give out, so the demo keeps them.
echo "== 2/6 dataset";  $FTF dataset build --project $P --keep-pii
# A 135M model on ~100 examples learns the facts faster at 1e-3 than at the general default 2e-4
# (measured on this data: eval loss 2.71 vs 3.37 after the same 24 steps; base 3.97).
echo "== 3/6 train";    $FTF train --project $P ${DEMO_TRAIN_ARGS:---lr 1e-3}
echo "== 4/6 evaluate"; $FTF evaluate --project $P
# every runtime at once, each reloaded and checked against the trained model before "done"
echo "== 5/6 export";   $FTF export --project $P -f adapter -f merged -f gguf -f gguf-lora -f ollama -f onnx \
                          -f report -f zip --gguf-types q8_0
echo "== 6/6 chat"
Q="What does error code E21 mean on the Proofwell P3?"
echo "Q: $Q"
echo -n "A: "; $FTF chat --project $P "$Q"

run=$(ls -1t "$FTF_HOME/projects/$P/runs" | head -1)
echo
echo "Done in $(( $(date +%s) - start )) s. Everything is under $FTF_HOME:"
echo "  dataset: $FTF_HOME/projects/$P/datasets/default/"
echo "  run:     $FTF_HOME/projects/$P/runs/$run/  (config.json, manifest.json, metrics.jsonl, adapter/)"
echo "  export:  $FTF_HOME/projects/$P/exports/$run/  (adapter/, merged/, gguf/, ollama/, onnx/, report.md)"
echo "  bundle:  $FTF_HOME/projects/$P/exports/$run.zip"
grep -m1 -E "the tuned model answers" "$FTF_HOME/projects/$P/exports/$run/report.md" || true
