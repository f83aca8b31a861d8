#!/usr/bin/env bash
# Install what the tests need and run them all (unit, integration on real audio, slow/multi-process).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bash scripts/install.sh --test
# real audio for the integration tests: the small demo corpus and suite, built once before the
# tests run in parallel (this also fills the package cache the data tests share)
"$PY" -m bestrq2.cli data all --small --out data/test
export BESTRQ2_TEST_CORPUS="$PWD/data/test/corpus"
set +e
"$PY" -m pytest -n 2 -q "$@"
rc=$?
set -e
[ "$rc" = 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
exit "$rc"
