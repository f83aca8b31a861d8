#!/usr/bin/env bash
# The scale-out benchmark on one GPU (written for an H100; any CUDA device runs it). Prints everything
# and writes JSON under $OUT (default runs/gpu-bench). Each part is meant to fit in 10 minutes of GPU time
# (estimated from the FLOP counts; not timed yet, no GPU was available when it was written):
#
#   bash benchmarks/gpu.sh throughput   base BEST-RQ-2, bf16, batch 256: clips/s, tokens/s, memory, MFU; eager and compiled
#   bash benchmarks/gpu.sh table        every method x preset (tiny, small, base) at the presets' batch sizes, eager
#   bash benchmarks/gpu.sh maxbatch     largest base BEST-RQ-2 batch without / with activation checkpointing
#   bash benchmarks/gpu.sh loader       data loader alone: 16 workers on PCM16 (and FLAC) shards, vs the model's clips/s
#   bash benchmarks/gpu.sh all          the four in turn (more than 10 minutes)
#
# Audio for the loader part: $AUDIO (folder or manifest), else the demo corpus data/corpus (`bestrq2 data
# corpus`, 11.7 h), else 1200 synthetic clips (noise + tones, 20-40 s, 10 h) written under $WORK: reading
# PCM16 does not depend on content. Shards go to $WORK too (not $OUT: they are large), about 4 per worker.
# The shards were just written, so they are read from the page cache: this measures decoding, cropping and
# collation, not the disk.
# Variables: OUT, WORK (/tmp/bestrq2-gpu-bench), AUDIO, BATCH (256), WORKERS (16), PRESET (base), PRESETS
# (tiny,small,base), LOADER_KINDS (pcm16 flac files), MAXBATCH_LIMIT_GIB
# (default: 79.0 on cards with more than 80 GiB, to answer "fits in 80 GB" on an H200; empty: the whole card).
set -uo pipefail
cd "$(dirname "$0")/.."
PART="${1:-all}"
OUT="${OUT:-runs/gpu-bench}"
WORK="${WORK:-/tmp/bestrq2-gpu-bench}"
BATCH="${BATCH:-256}"
PRESET="${PRESET:-base}"          # smoke test on a CPU: PRESET=tiny PRESETS=tiny BATCH=4 WORKERS=2
PRESETS="${PRESETS:-tiny,small,base}"
WORKERS="${WORKERS:-16}"
LOADER_KINDS="${LOADER_KINDS:-pcm16 flac files}"   # loader inputs: PCM16 shards, FLAC shards, the files themselves
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$WORK"

if ! "$PY" -c "import bestrq2" >/dev/null 2>&1; then
  "$PY" -m pip install -q -e . || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
B=("$PY" -m bestrq2.cli benchmark)

header() {
  echo "== $(date -u +%FT%TZ) $*"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch, os; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA DEVICE', '|', os.cpu_count(), 'CPUs')"
}

throughput() {
  header "throughput: $PRESET bestrq2, batch $BATCH, bf16"
  "${B[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 20 --warmup 5 --infer-seconds 60 --json "$OUT/throughput_eager.json"
  "${B[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 20 --warmup 12 --no-inference \
    --set parallel.compile=true --json "$OUT/throughput_compile.json"
  "${B[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 10 --warmup 3 --no-inference \
    --set parallel.activation_checkpointing=true --json "$OUT/throughput_ac.json"
}

table() {
  header "table: every method x preset"
  "${B[@]}" --methods bestrq2,bestrq-vit,bestrq-conformer,audiojepa --presets "$PRESETS" \
    --steps 10 --warmup 3 --no-inference --json "$OUT/table.json"
}

maxbatch() {
  header "largest batch: $PRESET bestrq2, without / with activation checkpointing"
  local limit="${MAXBATCH_LIMIT_GIB-}"
  if [ -z "${MAXBATCH_LIMIT_GIB+x}" ]; then
    limit=$("$PY" -c "import torch; t = torch.cuda.get_device_properties(0).total_memory / 2**30; print(79.0 if t > 80.5 else '')")
  fi
  "${B[@]}" --preset "$PRESET" --find-max-batch --both-checkpointing --max-batch-start "${MAXBATCH_START:-256}" --max-batch-step "${MAXBATCH_STEP:-64}" \
    ${limit:+--memory-limit-gib "$limit"} --json "$OUT/maxbatch.json"
}

audio_source() {
  if [ -n "${AUDIO:-}" ]; then echo "$AUDIO"; return; fi
  [ -f data/corpus/manifest.jsonl ] && { echo data/corpus/manifest.jsonl; return; }
  local syn="$WORK/synthetic_audio"
  if [ ! -d "$syn" ]; then
    "$PY" - "$syn" >&2 <<'PYEOF'
import sys, pathlib, numpy as np, soundfile as sf
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True)
rng = np.random.default_rng(0)
for i in range(1200):  # 1200 clips of 20-40 s: 10 h
    n = int(rng.uniform(20, 40) * 16000); t = np.arange(n) / 16000
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    sf.write(out / f"clip{i:04d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
print(f"wrote 1200 synthetic clips to {out}")
PYEOF
  fi
  echo "$syn"
}

make_shards() {  # SRC FORMAT DIR: about 4 shards per loader worker (fewer shards than workers: each tar is read by several)
  [ -f "$3/shards.json" ] && return 0
  local n per
  n=$("$PY" -c "import sys; from bestrq2.data import list_audio; print(len(list_audio(sys.argv[1])))" "$1")
  per=$(( n / (4 * WORKERS) ))
  [ "$per" -ge 1 ] || per=1
  "$PY" -m bestrq2.cli data shard "$1" --out "$3" --format "$2" --clips-per-shard "$per" --workers "$WORKERS" --no-progress >&2
}

loader() {
  header "data loader alone: $WORKERS workers, batch $BATCH, $PRESET crop"
  local src; src=$(audio_source)
  echo "audio: $src"
  local cmp=()
  [ -f "$OUT/throughput_eager.json" ] && cmp+=(--compare-json "$OUT/throughput_eager.json")
  [ -f "$OUT/throughput_compile.json" ] && cmp+=(--compare-json "$OUT/throughput_compile.json")
  for kind in $LOADER_KINDS; do
    if [ "$kind" = files ]; then
      "${B[@]}" --preset "$PRESET" --batch-size "$BATCH" --loader "$src" --workers "$WORKERS" --batches 30 --json "$OUT/loader_files.json"
      continue
    fi
    make_shards "$src" "$kind" "$WORK/shards_$kind"
    "${B[@]}" --preset "$PRESET" --batch-size "$BATCH" --loader "$WORK/shards_$kind" --workers "$WORKERS" --batches 60 \
      "${cmp[@]}" --json "$OUT/loader_$kind.json"
  done
  if [ "${#cmp[@]}" -eq 0 ]; then
    echo "no model figures in $OUT yet: run 'bash benchmarks/gpu.sh throughput' first to compare (or --with-model)"
  fi
}

case "$PART" in
  throughput) throughput ;;
  table) table ;;
  maxbatch) maxbatch ;;
  loader) loader ;;
  all) throughput; table; maxbatch; loader ;;
  *) echo "usage: bash benchmarks/gpu.sh [throughput|table|maxbatch|loader|all]" >&2; exit 2 ;;
esac
echo "== done: JSON in $OUT"
