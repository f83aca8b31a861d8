#!/usr/bin/env bash
# Everything one short GPU lease is for, in one command that ends on its own inside ~9 minutes:
#   1. base BEST-RQ-2 training throughput / MFU at bf16 (eager, activation checkpointing), inference;
#   2. the recipe at `small-2x` pretrained for a few minutes, 2 seeds side by side on the one GPU, from a
#      corpus copy small enough to travel (scripts/carry_corpus.py), exported and packed to int8 rows
#      (scripts/weights_transport.py, with a feature-fidelity check) so the suite can score it back home;
#   3. the data loader alone on PCM16 shards with 16 workers (benchmarks/gpu.sh loader);
#   4. the largest base batch without / with activation checkpointing;
#   5. base throughput under torch.compile.
# Each part has its own time limit and the script skips what no longer fits in BUDGET_S, so whatever ran
# comes back. Results: $OUT/bench.tgz (JSON + logs + configs) and $OUT/w/*.safetensors (packed weights).
#
#   (once, here)  python scripts/carry_corpus.py data/corpus .carry/corpus --budget-mib 46
#                 python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                   --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#                   --platform manylinux2014_x86_64 -d .whl soundfile==0.14.0 soxr cffi pycparser
#   (device)      python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#                   && PYTHONPATH=/tmp/site bash benchmarks/gpu_lease.sh          (.carry and .whl carried)
#   then here:    bash benchmarks/lease_results.sh FILES_AT     (figures, rebuilt exports, the suite's scores)
#   (CPU smoke)   SMOKE=1 OUT=/tmp/lease bash benchmarks/gpu_lease.sh
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT="${OUT:-runs/gpu-lease}"
BUDGET_S="${BUDGET_S:-555}"
WORK="${WORK:-/tmp/bestrq2-lease}"
CORPUS="${CORPUS:-.carry/corpus/manifest.jsonl}"
PY="${PYTHON:-python3}"
if [ "${SMOKE:-0}" = 1 ]; then  # the same flow on a CPU in a few minutes
  PRESET=tiny BATCH=4 RB=4 RSEC=20 WORKERS=2 SETS=(--set encoder.depth=1); BUDGET_S=100000
  MB_ENV=(MAXBATCH_LIMIT_GIB=3)  # the CPU needs an emulated memory limit
else
  PRESET=base BATCH=256 RB="${RECIPE_BATCH:-64}" RSEC="${RECIPE_SECONDS:-150}" WORKERS=16 SETS=() MB_ENV=()
fi
RLR="${RECIPE_LR:-3e-4}"
B="$OUT/b"; mkdir -p "$B" "$OUT/w" "$WORK"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
exec > >(tee -a "$B/lease.log") 2>&1

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
part() {  # NAME LIMIT_S CMD...: run CMD under a limit, if the budget still holds it
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 20 ]; then echo "== skip $name: ${l}s left"; return 0; fi
  [ "$limit" -gt "$l" ] && limit=$l
  echo "== $(date -u +%T) $name (limit ${limit}s, ${l}s left)"
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "== $name: rc=$rc after $(( $(date +%s) - START ))s"
}
BENCH=("$PY" -m bestrq2.cli benchmark)

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
"$PY" -c "import torch, os, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU', os.cpu_count(), 'CPUs')"
"$PY" -c "import bestrq2, soundfile, soxr; print('bestrq2 imports')" || exit 1

# 1. throughput and MFU (eager), then with activation checkpointing
part throughput 90 "${BENCH[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 20 --warmup 5 --infer-seconds 60 "${SETS[@]}" --json "$B/throughput_eager.json"
part throughput-ac 45 "${BENCH[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 10 --warmup 3 --no-inference "${SETS[@]}" \
  --set parallel.activation_checkpointing=true --json "$B/throughput_ac.json"

# 2. the recipe at small-2x: GPU speed alone, loader speed alone (which also fills the decode cache), then
#    2 seeds side by side for RSEC seconds each; steps from the slower of the two rates
RSETS=(--set data.decode_cache="$WORK/decode-cache" --set optim.lr="$RLR")
part recipe-speed 40 "${BENCH[@]}" --preset small-2x --batch-size "$RB" --steps 10 --warmup 3 --no-inference "${SETS[@]}" --json "$B/recipe_speed.json"
part recipe-loader 60 "${BENCH[@]}" --preset small-2x --batch-size "$RB" --loader "$CORPUS" --workers "$WORKERS" --batches 40 \
  "${RSETS[@]}" --json "$B/recipe_loader.json"
STEPS=$("$PY" - "$B" "$RB" "$RSEC" "$WORKERS" <<'PYEOF'
import json, sys
b, batch, secs, workers = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def get(f, *k):
    try:
        d = json.load(open(f"{b}/{f}"))
        for x in k: d = d[x]
        return d
    except Exception: return None
gpu = get("recipe_speed.json", "train", "step_s") or 0.05
clips = get("recipe_loader.json", "loader", "clips_per_s") or 500.0
# two runs share the GPU and, with half the workers each, the CPU; count 2.5 GPU steps and a quarter of
# the loader's rate for each (start-up, the trainer's own CPU work)
step = max(2.5 * gpu, batch / (0.25 * clips))
print(max(50, int(secs / step)))
PYEOF
)
echo "recipe: $STEPS steps per seed at batch $RB, lr $RLR"
rm -rf "$WORK/recipe"  # a rerun on a warm machine must not export (and report) the last lease's runs
PIDS=()
for seed in 0 1; do
  timeout -k 15 $(( RSEC * 2 )) "$PY" -m bestrq2.cli pretrain --data "$CORPUS" --out "$WORK/recipe/seed$seed" --preset small-2x \
    --batch-size "$RB" --seed "$seed" --max-steps "$STEPS" --no-progress "${SETS[@]}" "${RSETS[@]}" \
    --set data.num_workers=$(( WORKERS / 2 - 1 )) --set train.log_every=25 --set train.ckpt_every=100000 \
    > "$B/recipe_seed$seed.log" 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"  # not a bare wait: that would also wait for the tee behind the log
for seed in 0 1; do
  r="$WORK/recipe/seed$seed"; tail -3 "$B/recipe_seed$seed.log"
  cp "$r/log.csv" "$B/recipe_seed${seed}_log.csv" 2>/dev/null; cp "$r/config.json" "$B/recipe_seed${seed}_config.json" 2>/dev/null
  "$PY" -m bestrq2.cli export "$r" --out "$r/export" \
    && "$PY" scripts/weights_transport.py pack "$r/export" "$OUT/w/seed$seed" --max-file-mib 15.5 \
    && "$PY" scripts/weights_transport.py check "$r/export" "$OUT/w/seed$seed" | tee "$B/transport_seed$seed.json"
  mv "$OUT/w/seed$seed/config.json" "$B/export_seed${seed}_config.json" 2>/dev/null
done
echo "== recipe done after $(( $(date +%s) - START ))s"

# 3. the data loader alone on PCM16 shards (16 workers), from the carried corpus
part loader 100 env OUT="$B" WORK="$WORK" AUDIO="$CORPUS" BATCH="$BATCH" PRESET="$PRESET" WORKERS="$WORKERS" \
  LOADER_KINDS=pcm16 bash benchmarks/gpu.sh loader

# 4. largest batch, 5. compile: last, each inside what is left
part maxbatch 100 env OUT="$B" PRESET="$PRESET" MAXBATCH_START=512 MAXBATCH_STEP=128 "${MB_ENV[@]}" bash benchmarks/gpu.sh maxbatch
part throughput-compile 120 "${BENCH[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 20 --warmup 12 --no-inference "${SETS[@]}" \
  --set parallel.compile=true --json "$B/throughput_compile.json"

echo "== lease done after $(( $(date +%s) - START ))s"
tar -czf "$OUT/bench.tgz" -C "$OUT" b && rm -rf "$B"
