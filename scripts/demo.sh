#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, build the demo corpus and suite from
# real audio, pretrain a tiny BEST-RQ-2 encoder on the CPU, export it, evaluate it against a
# random-init encoder and a log-mel baseline, and print the results.
#
#   DEMO_STEPS=2000 bash scripts/demo.sh    (fewer steps: a quicker, weaker run; the tiny preset's 4000
#                                           steps take 4-13 min on 2 cores,
#                                           depending on the machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STEPS_ARG=()
[ -n "${DEMO_STEPS:-}" ] && STEPS_ARG=(--max-steps "$DEMO_STEPS")   # default: the preset's steps
RUNS="${DEMO_RUNS:-runs/demo}"

bash scripts/install.sh
"$PY" -m bestrq2.cli data all                      # data/corpus and data/suite (cached after the first run)

if [ ! -f "$RUNS/bestrq2/checkpoints/last.pt" ]; then
  # each FLAC file decoded once (1.3 GB of .npy under $RUNS): the same crops, less CPU taken from training
  "$PY" -m bestrq2.cli pretrain --out "$RUNS/bestrq2" --preset tiny --set data.decode_cache="$RUNS/decode-cache" "${STEPS_ARG[@]}"
else
  "$PY" -m bestrq2.cli pretrain --out "$RUNS/bestrq2" --resume   # finishes an interrupted run
fi
# the tiny recipe's full-band patches give one token per 156 ms time step: nothing to pool over frequency
"$PY" -m bestrq2.cli export "$RUNS/bestrq2" --out "$RUNS/bestrq2/export"

"$PY" - "$RUNS" <<'PYEOF'
import sys
from bestrq2.training.logs import read_log
log = read_log(f"{sys.argv[1]}/bestrq2")
first, last = log[0], log[-1]
print(f"\npretraining: step {int(last['step'])}, loss {first['loss']:.3f} -> {last['loss']:.3f}, "
      f"masked-code accuracy {first['acc']:.3f} -> {last['acc']:.3f}, codes used {last['codes_used']:.0f}\n")
PYEOF

# X-ARES protocol (linear probe + kNN) on the demo suite: pretrained vs random-init vs log-mel
"$PY" -m bestrq2.cli evaluate "$RUNS/bestrq2/export" --baselines --suite data/suite --out "$RUNS/results"
