#!/usr/bin/env bash
# Install bestrq2 and everything it needs on a fresh Debian/Ubuntu machine (idempotent).
#
#   scripts/install.sh          the package, its Python dependencies and the system tools
#   scripts/install.sh --test   also what the tests need (pytest, librosa, the X-ARES checker)
#
# torch: if no torch is importable, torch==2.13.0 is installed first (a CPU wheel on machines
# without a GPU; on a GPU machine install the CUDA build you want before running this), and a
# constraint keeps any later dependency from replacing it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TEST=0
[ "${1:-}" = "--test" ] && TEST=1

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_q() { "$PY" -m pip install -q "$@" 2>&1 | grep -v -e "^WARNING: Location" -e "^WARNING: Running pip as" || true; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: installing torch==2.13.0"
  pip_q "torch==2.13.0"
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINT=$(mktemp)
echo "torch==${TORCH_VERSION}" >"$CONSTRAINT"
export PIP_CONSTRAINT="$CONSTRAINT"

if [ "$TEST" = 1 ]; then
  pip_q -e ".[test]"
  # the X-ARES checker: the xares package declares torchaudio, which has no CPU build here;
  # its checker module needs only torch and loguru
  "$PY" -c "import xares.audio_encoder_checker" >/dev/null 2>&1 || pip_q --no-deps "xares"
else
  pip_q -e .
fi
"$PY" -c "import bestrq2, torch; print(f'install.sh: bestrq2 {bestrq2.__version__}, torch {torch.__version__}')"

# system tools for the demo corpus and suite (apt: espeak-ng, mbrola voices, pico; tinysoundfont)
if [ "$TEST" = 1 ]; then bash scripts/setup_system.sh --small; else bash scripts/setup_system.sh; fi
