#!/usr/bin/env bash
# The paper's comparison at demo scale: BEST-RQ-2 (two steps), one-step BEST-RQ on the ViT and on a
# Conformer, and Audio-JEPA, each pretrained with the same encoder size and recipe (PRESET, default
# tiny: width 192, depth 4, 3 heads, full-band 128x4 patches) and the same budget (STEPS x batch 16 x
# 5 s crops) on the demo corpus for each seed in SEEDS, exported with the default settings (POOLINGS
# "mean concat" exports 16x16-patch ViTs both ways; the Conformer has no frequency axis), then evaluated
# on the demo suite (X-ARES protocol: linear probe + kNN) beside random-init floors of both
# architectures (same seeds) and log-mel statistics.
#
#   bash scripts/compare_methods.sh                 (tiny, STEPS=1500, seeds 0 and 1: about 45 min on 2 CPU cores)
#   PRESET=tiny-ref POOLINGS="mean concat" SEEDS=0 bash scripts/compare_methods.sh   (the reference recipe)
#   STEPS=300 SEEDS=0 RUNS=runs/cmp RESULTS=results/cmp bash scripts/compare_methods.sh
#
# TRAIN_ONLY=1 pretrains and exports only (e.g. one process per seed side by side, then a last run
# without it evaluates everything).
# PRETRAIN_ARGS passes options to `bestrq2 pretrain` (e.g. "--set data.num_workers=1"), EVAL_ARGS to `bestrq2 evaluate` (e.g. "--tasks NAME" for a quick check).
# Re-running resumes unfinished runs and reuses cached embeddings. Timings go to RESULTS/timing.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PRESET="${PRESET:-tiny}"
STEPS="${STEPS:-1500}"
RUNS="${RUNS:-runs/compare_methods/$PRESET}"
RESULTS="${RESULTS:-results/compare_methods/$PRESET}"
SUITE="${SUITE:-data/suite}"
DATA="${DATA:-data/corpus/manifest.jsonl}"
SEEDS="${SEEDS:-0 1}"
POOLINGS="${POOLINGS:-default}"  # export poolings of the ViT methods: "mean concat" for 16x16 patches
METHODS=(bestrq2 bestrq-vit bestrq-conformer audiojepa)
mkdir -p "$RUNS/exports" "$RESULTS"
TIMING="$RESULTS/timing.tsv"
[ -f "$TIMING" ] || printf "stage\tseconds\n" > "$TIMING"
{
  echo "command: PRESET=$PRESET STEPS=$STEPS SEEDS=\"$SEEDS\" POOLINGS=\"$POOLINGS\" bash scripts/compare_methods.sh"
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
for seed in $SEEDS; do
  for m in "${METHODS[@]}"; do
    name="$m-seed$seed"
    run="$RUNS/$name"
    if [ -f "$run/summary.json" ] && [ -f "$run/checkpoints/last.pt" ]; then
      echo "== $name: already trained"
    elif [ -f "$run/checkpoints/last.pt" ]; then
      timed "pretrain $name (resumed)" "$PY" -m bestrq2.cli pretrain --out "$run" --resume --no-progress
    else
      timed "pretrain $name" "$PY" -m bestrq2.cli pretrain --method "$m" --preset "$PRESET" --max-steps "$STEPS" \
        --seed "$seed" --data "$DATA" --out "$run" --no-progress ${PRETRAIN_ARGS:-}
    fi
    # the Conformer has frames with no frequency axis to pool; full-band ViT patches have none either
    for pooling in $([ "$m" = bestrq-conformer ] && echo default || echo "$POOLINGS"); do
      if [ "$pooling" = default ]; then
        out="$RUNS/exports/$name"
        "$PY" -m bestrq2.cli export "$run" --out "$out"
      else
        out="$RUNS/exports/$name-$pooling"
        "$PY" -m bestrq2.cli export "$run" --out "$out" --pooling "$pooling"
      fi
      MODELS+=("$out")
      # floors: random-init encoders of both architectures (the ViT methods share one), same export, same seed
      if [ "$m" = bestrq2 ] || [ "$m" = bestrq-conformer ]; then MODELS+=("random:$out:$seed"); fi
    done
  done
done
if [ -n "${TRAIN_ONLY:-}" ]; then echo "trained and exported: ${MODELS[*]}"; exit 0; fi
MODELS+=(logmel)
timed "evaluate ${#MODELS[@]} models" "$PY" -m bestrq2.cli evaluate "${MODELS[@]}" --suite "$SUITE" \
  --out "$RESULTS" --no-progress ${EVAL_ARGS:-}
"$PY" - "$RUNS" "$RESULTS" "$SEEDS" "${METHODS[@]}" <<'PYEOF'
import json, sys
from bestrq2.training.logs import read_log
runs, results, seeds, methods = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
rows = ["| run | steps | loss first -> last | acc (codes) / cosine (JEPA) last | train time (s) |", "|---|---|---|---|---|"]
for m in [f"{m}-seed{s}" for s in seeds for m in methods]:
    log = [r for r in read_log(f"{runs}/{m}") if "loss" in r]
    summary = json.load(open(f"{runs}/{m}/summary.json"))
    rows.append(f"| {m} | {int(log[-1]['step'])} | {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} | "
                f"{log[-1]['acc']:.3f} | {summary['elapsed_s']:.0f} |")
open(f"{results}/pretraining.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PYEOF
echo "results in $RESULTS (comparison.md, comparison.png, pretraining.md, timing.tsv, run_info.txt)"
