#!/usr/bin/env bash
# After a GPU lease: unpack what benchmarks/gpu_lease.sh brought back, print its figures, and score the
# small-2x encoders it trained on the demo suite beside random-init encoders of the same seeds and log-mel.
#
#   bash benchmarks/lease_results.sh FILES [DEST]
#
# FILES: the folder holding bench.tgz and w/ (the device tool's copy of $OUT, read-only is fine);
# DEST (runs/gpu-lease): where the figures, the rebuilt exports and the evaluation go.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:?usage: bash benchmarks/lease_results.sh FILES [DEST]}"
DST="${2:-runs/gpu-lease}"
PY="${PYTHON:-python3}"
mkdir -p "$DST"
tar xzf "$SRC/bench.tgz" -C "$DST"
B="$DST/b"
"$PY" - "$B" <<'PYEOF'
import json, sys
from pathlib import Path
b = Path(sys.argv[1])
for name in ["throughput_eager", "throughput_ac", "throughput_compile", "recipe_speed"]:
    f = b / f"{name}.json"
    if not f.exists():
        print(f"{name}: not run"); continue
    r = json.loads(f.read_text()); t = r.get("train", {})
    if "error" in t:
        print(f"{name}: {t['error']}"); continue
    mfu = f"{100 * t['mfu']:.1f} %" if t.get("mfu") else "n/a"
    print(f"{name}: {r['device']} {r['preset']} batch {r['batch_size']}: step {1000 * t['step_s']:.1f} ms, "
          f"{t['clips_per_s']:.0f} clips/s, {t['model_tflops']:.1f} TFLOP/s, MFU {mfu}, "
          f"peak {t['peak_memory_bytes'] / 2**30:.1f} GiB" + (f" (matmul probe {r['probe_tflops']:.0f} TFLOP/s)" if r.get("probe_tflops") else ""))
for name in ["recipe_loader", "loader_pcm16"]:
    f = b / f"{name}.json"
    if f.exists():
        l = json.loads(f.read_text())["loader"]
        print(f"{name}: {l['kind']} {l['workers']} workers, batch {l['batch_size']} x {l['crop_seconds']:g} s: "
              f"{l['clips_per_s']:.0f} clips/s")
f = b / "maxbatch.json"
if f.exists():
    for m in json.loads(f.read_text()).get("max_batch", []):
        print(f"maxbatch: {m['preset']} activation checkpointing {'on' if m['activation_checkpointing'] else 'off'}: "
              f"{m['max_batch']} x {m['crop_seconds']:g} s (limit {m.get('memory_limit_gib')} GiB, step {m.get('step_s') or 0:.2f} s)")
PYEOF
models=()
for packed in "$SRC"/w/seed*; do
  [ -d "$packed" ] || continue
  seed=$(basename "$packed"); n=${seed#seed}
  tmp=$(mktemp -d); cp "$packed"/weights-*.safetensors "$tmp"/; cp "$B/export_${seed}_config.json" "$tmp/config.json"
  "$PY" scripts/weights_transport.py unpack "$tmp" "$DST/small2x-$seed"; rm -rf "$tmp"
  cat "$B/transport_$seed.json" 2>/dev/null || true
  models+=("$DST/small2x-$seed" "random:$DST/small2x-$seed:$n")
done
[ "${#models[@]}" -gt 0 ] || { echo "no encoders came back"; exit 0; }
"$PY" -m bestrq2.cli evaluate "${models[@]}" logmel --suite data/suite --out "$DST/eval" --no-progress
