#!/usr/bin/env bash
# The paper's comparison at demo scale: BEST-RQ-2 (two steps), one-step BEST-RQ on the ViT and on a
# Conformer, and Audio-JEPA, each pretrained with the same encoder size (the tiny-ref preset, the reference recipe: width 192,
# depth 4, 3 heads) and the same budget (STEPS x batch 16 x 5 s crops) on the demo corpus, exported
# with both frequency poolings (mean: the reference readout; concat: 8 x D; the Conformer has no
# frequency axis), then evaluated on the demo suite (X-ARES protocol: linear probe + kNN) beside
# random-init floors of both architectures and log-mel statistics.
#
#   bash scripts/compare_methods.sh                 (STEPS=1500: about 30 min on 2 CPU cores)
#   STEPS=300 RUNS=runs/cmp RESULTS=results/cmp bash scripts/compare_methods.sh
#
# EVAL_ARGS passes options to `bestrq2 evaluate` (e.g. "--tasks NAME" for a quick check).
# Re-running resumes unfinished runs and reuses cached embeddings. Timings go to RESULTS/timing.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STEPS="${STEPS:-1500}"
RUNS="${RUNS:-runs/compare_methods}"
RESULTS="${RESULTS:-results/compare_methods}"
SUITE="${SUITE:-data/suite}"
DATA="${DATA:-data/corpus/manifest.jsonl}"
METHODS=(bestrq2 bestrq-vit bestrq-conformer audiojepa)
mkdir -p "$RUNS/exports" "$RESULTS"
TIMING="$RESULTS/timing.tsv"
[ -f "$TIMING" ] || printf "stage\tseconds\n" > "$TIMING"
{
  echo "command: STEPS=$STEPS bash scripts/compare_methods.sh"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "torch: $("$PY" -c 'import torch; print(torch.__version__)')"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$RESULTS/run_info.txt"

timed() {  # timed NAME CMD...: run CMD, append its wall time to the timing table
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  printf "%s\t%s\n" "$name" "$(( $(date +%s) - t0 ))" >> "$TIMING"
}

MODELS=()
for m in "${METHODS[@]}"; do
  run="$RUNS/$m"
  if [ -f "$run/summary.json" ] && [ -f "$run/checkpoints/last.pt" ]; then
    echo "== $m: already trained"
  elif [ -f "$run/checkpoints/last.pt" ]; then
    timed "pretrain $m (resumed)" "$PY" -m bestrq2.cli pretrain --out "$run" --resume --no-progress
  else
    timed "pretrain $m" "$PY" -m bestrq2.cli pretrain --method "$m" --preset tiny-ref --max-steps "$STEPS" \
      --data "$DATA" --out "$run" --no-progress
  fi
  if [ "$m" = bestrq-conformer ]; then  # frames: nothing to pool over frequency
    "$PY" -m bestrq2.cli export "$run" --out "$RUNS/exports/$m"
    MODELS+=("$RUNS/exports/$m")
  else
    "$PY" -m bestrq2.cli export "$run" --out "$RUNS/exports/$m-mean" --pooling mean
    "$PY" -m bestrq2.cli export "$run" --out "$RUNS/exports/$m-concat" --pooling concat
    MODELS+=("$RUNS/exports/$m-mean" "$RUNS/exports/$m-concat")
  fi
done
# floors: random-init encoders of both architectures (same configs, seed 0), log-mel statistics
MODELS+=("random:$RUNS/exports/bestrq2-mean" "random:$RUNS/exports/bestrq2-concat"
         "random:$RUNS/exports/bestrq-conformer" logmel)
timed "evaluate ${#MODELS[@]} models" "$PY" -m bestrq2.cli evaluate "${MODELS[@]}" --suite "$SUITE" \
  --out "$RESULTS" --no-progress ${EVAL_ARGS:-}
"$PY" - "$RUNS" "$RESULTS" "${METHODS[@]}" <<'PYEOF'
import json, sys
from bestrq2.training.logs import read_log
runs, results, methods = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = ["| method | steps | loss first -> last | acc (codes) / cosine (JEPA) last | train time (s) |", "|---|---|---|---|---|"]
for m in methods:
    log, summary = read_log(f"{runs}/{m}"), json.load(open(f"{runs}/{m}/summary.json"))
    rows.append(f"| {m} | {int(log[-1]['step'])} | {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} | "
                f"{log[-1]['acc']:.3f} | {summary['elapsed_s']:.0f} |")
open(f"{results}/pretraining.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PYEOF
echo "results in $RESULTS (comparison.md, comparison.png, pretraining.md, timing.tsv, run_info.txt)"
